"""EXIF fields read from every photo format vitsearch indexes, and nothing (never an error) from broken ones."""

import io
import struct
from datetime import datetime, timezone

import numpy as np
import pytest
from helpers import photo
from photofiles import dng_bytes, exif_bytes, save_photo, tiff_bytes
from PIL import Image

from vitsearch.exif import CAMERA_WORDS, FIELDS, camera_words, parse_exif_time, read_exif

TAGS = dict(taken="2024:06:01 10:00:00", offset="+09:00", make="Apple", model="iPhone 15 Pro",
            lens="iPhone 15 Pro back camera 6.765mm f/1.78", gps=(-33.8568, 151.2153), orientation=6)
WANT = {
    "taken_at": int(datetime(2024, 6, 1, 1, 0, tzinfo=timezone.utc).timestamp()),  # 10:00 in Tokyo
    "camera_make": "Apple", "camera_model": "iPhone 15 Pro", "lens": "iPhone 15 Pro back camera 6.765mm f/1.78",
    "gps_lat": -33.8568, "gps_lon": 151.2153, "orientation": 6, CAMERA_WORDS: ["apple", "iphone", "15", "pro"],
}


def _close(got: dict, want: dict) -> None:
    assert set(got) == set(want), (got, want)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-6), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF", "TIFF", "WEBP", "PNG"])
def test_every_field_from_a_file_written_by_its_library(tmp_path, fmt):
    if fmt == "HEIF":
        pytest.importorskip("pillow_heif")
    path = save_photo(tmp_path / f"p.{fmt.lower()}", photo(1, (40, 30)), fmt, **TAGS)
    _close(read_exif(path), WANT)
    _close(read_exif(path.read_bytes()), WANT)


def test_heic_reports_the_orientation_it_was_taken_in_though_its_pixels_are_already_upright(tmp_path):
    pytest.importorskip("pillow_heif")
    path = save_photo(tmp_path / "p.heic", photo(1, (40, 30)), "HEIF", orientation=8)
    assert read_exif(path) == {"orientation": 8}


def test_a_dng_and_the_tiff_magic_of_other_raw_formats(tmp_path):
    data = dng_bytes(np.zeros((8, 8, 3), np.uint8), make="NIKON CORPORATION", model="NIKON D750",
                     orientation=8, taken="2019:12:31 23:59:59", offset="-05:00", lens="50mm f/1.8",
                     gps=(64.1466, -21.9426))
    want = {"taken_at": int(datetime(2020, 1, 1, 4, 59, 59, tzinfo=timezone.utc).timestamp()),
            "camera_make": "NIKON CORPORATION", "camera_model": "NIKON D750", "lens": "50mm f/1.8",
            "gps_lat": 64.1466, "gps_lon": -21.9426, "orientation": 8,
            CAMERA_WORDS: ["nikon", "corporation", "d750"]}
    _close(read_exif(data), want)
    for magic in (b"IIRO", b"IIU\0"):  # Olympus ORF, Panasonic RW2: TIFF with their own magic
        (tmp_path / "x.raw").write_bytes(magic + data[4:])
        _close(read_exif(tmp_path / "x.raw"), want)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def test_canon_cr3_boxes_and_fujifilm_raf_preview(tmp_path):
    from photofiles import ASCII, SHORT, _Ifd

    cmt1 = tiff_bytes(_Ifd([(271, ASCII, "Canon"), (272, ASCII, "Canon EOS R5"), (274, SHORT, [3])]), [])
    cmt2 = tiff_bytes(_Ifd([(36867, ASCII, "2023:07:14 12:00:00"), (42036, ASCII, "RF24-105mm F4 L IS USM")]), [])
    uuid = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
    cr3 = (_box(b"ftyp", b"crx \0\0\0\1crx isom") + _box(b"moov", _box(b"uuid", uuid + _box(b"CMT1", cmt1)
                                                                         + _box(b"CMT2", cmt2))) + _box(b"mdat", b"\0" * 64))
    assert read_exif(cr3) == {"taken_at": int(datetime(2023, 7, 14, 12, tzinfo=timezone.utc).timestamp()),
                              "camera_make": "Canon", "camera_model": "Canon EOS R5", "lens": "RF24-105mm F4 L IS USM",
                              "orientation": 3, CAMERA_WORDS: ["canon", "eos", "r5"]}

    jpeg = io.BytesIO()
    photo(2, (16, 16)).save(jpeg, "JPEG", exif=exif_bytes(make="FUJIFILM", model="X-T5", taken="2024:02:29 08:30:00"))
    header = b"FUJIFILMCCD-RAW 0201FF383501".ljust(84, b"\0") + struct.pack(">II", 100, len(jpeg.getvalue()))
    raf = header.ljust(100, b"\0") + jpeg.getvalue()
    got = read_exif(raf)
    assert (got["camera_make"], got["camera_model"], got[CAMERA_WORDS]) == ("FUJIFILM", "X-T5", ["fujifilm", "x", "t5"])
    assert got["taken_at"] == int(datetime(2024, 2, 29, 8, 30, tzinfo=timezone.utc).timestamp())


@pytest.mark.parametrize("value, offset, want", [
    ("2024:06:01 10:00:00", "+09:00", "2024-06-01T01:00:00+00:00"),
    ("2024:06:01 10:00:00", "-07:00", "2024-06-01T17:00:00+00:00"),
    ("2024:06:01 10:00:00", "+05:30", "2024-06-01T04:30:00+00:00"),
    ("2024:06:01 10:00:00", None, "2024-06-01T10:00:00+00:00"),  # no offset: the wall clock read as UTC
    ("2024:06:01 10:00:00", "   ", "2024-06-01T10:00:00+00:00"),
    ("2024-06-01T10:00:00", "Z", "2024-06-01T10:00:00+00:00"),
    (b"2024:06:01 10:00:00\0", None, "2024-06-01T10:00:00+00:00"),
    ("1969:07:20 20:17:40", "+00:00", "1969-07-20T20:17:40+00:00"),
])
def test_exif_times_with_and_without_offsets(value, offset, want):
    assert parse_exif_time(value, offset) == int(datetime.fromisoformat(want).timestamp())


@pytest.mark.parametrize("value", [None, "", "0000:00:00 00:00:00", "    :  :     :  :  ", "2024:13:45 10:00:00",
                                   "yesterday", 20240601])
def test_blank_or_broken_times_are_no_time(value):
    assert parse_exif_time(value, "+01:00") is None


def _broken_gps_jpeg() -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: "N", 2: (100.0, 0.0, 0.0), 3: "E", 4: (10.0, 0.0, 0.0)})  # latitude 100
    buf = io.BytesIO()
    photo(3, (8, 8)).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("source", [
    b"", b"not an image at all", b"\xff\xd8\xff\xe1\x00\x10Exif\0\0II*\0\xff\xff\xff\xff",  # EXIF that points nowhere
    b"II*\0\x08\0\0\0", b"FUJIFILMCCD-RAW " + b"\xff" * 80, b"\0\0\0\x18ftypcrx " + b"\0" * 8,
    b"\0\0\0\x18ftypheic" + b"\0" * 8, _broken_gps_jpeg(),
], ids=["empty", "text", "exif-pointing-nowhere", "tiff-header-only", "raf-header-only", "cr3-header-only",
        "heic-header-only", "gps-out-of-range"])
def test_broken_or_missing_exif_is_no_fields_never_an_error(source):
    assert read_exif(source) == {}


def test_a_missing_file_has_no_fields(tmp_path):
    assert read_exif(tmp_path / "gone.jpg") == {}


@pytest.mark.parametrize("make, model, want", [
    ("Canon", "Canon EOS 5D Mark II", ["canon", "eos", "5d", "mark", "ii"]),
    ("SONY", "ILCE-7M3", ["sony", "ilce", "7m3"]),
    (None, "Pixel 8", ["pixel", "8"]),
    ("", "", []),
    (None, None, []),
])
def test_camera_words(make, model, want):
    assert camera_words(make, model) == want


def test_fields_are_the_issue_s_list():
    assert list(FIELDS) == ["taken_at", "camera_make", "camera_model", "lens", "gps_lat", "gps_lon", "orientation"]
