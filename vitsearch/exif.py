"""What a photo's own EXIF says about it: when, with what, where, which way up.

:data:`FIELDS` is the one definition of the EXIF fields vitsearch stores with a row (the store builds
rows from it, the filters and ``info`` read it). :func:`read_exif` reads them from JPEG, HEIC/HEIF,
AVIF, TIFF and camera RAW files (the TIFF-based ones - DNG, CR2, NEF, ARW, ORF, RW2, PEF, SRW -,
Fujifilm RAF and Canon CR3) and never raises: a file without EXIF, or with broken EXIF, has none.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings
from datetime import datetime, timedelta, timezone
from typing import BinaryIO

# name -> Python type of the value; a row has a field only when its file says it
FIELDS: dict[str, type] = {
    "taken_at": int,  # DateTimeOriginal with its offset (OffsetTimeOriginal), epoch seconds; no offset: read as UTC
    "camera_make": str,
    "camera_model": str,
    "lens": str,
    "gps_lat": float,  # degrees, north positive
    "gps_lon": float,  # degrees, east positive, -180 .. 180
    "orientation": int,  # EXIF orientation 1-8 as the file gives it (the pixels are always stored upright)
}
# Derived from camera_make and camera_model: their lowercase words, for `--camera` (Milvus has no lower()).
CAMERA_WORDS = "camera_words"

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"IIRO", b"IIU\0", b"MMOR")  # TIFF; Olympus ORF; Panasonic RW2
_CR3_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")

# EXIF tags
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_ORIGINAL, _DIGITIZED = 0x9003, 0x9004
_OFFSET, _OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 0x9010, 0x9011, 0x9012
_LENS_MAKE, _LENS_MODEL = 0xA433, 0xA434

Source = str | os.PathLike | bytes | bytearray | memoryview


def read_exif(source: Source) -> dict:
    """The :data:`FIELDS` (and :data:`CAMERA_WORDS`) that the file or bytes ``source`` has; ``{}`` if none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF; what is readable is read
            if isinstance(source, (bytes, bytearray, memoryview)):
                return _fields(*_tags(io.BytesIO(bytes(source))))
            with open(os.fspath(source), "rb") as fh:
                return _fields(*_tags(fh))
    except Exception:  # noqa: BLE001 - EXIF is a bonus: whatever is wrong with it, the file has none
        return {}


def camera_words(make: object, model: object) -> list[str]:
    """The lowercase words of a camera's make and model, each once: 'Canon', 'Canon EOS 5D Mark II' ->
    ['canon', 'eos', '5d', 'mark', 'ii']."""
    words: list[str] = []
    for text in (make, model):
        if isinstance(text, str):
            for word in words_of(text):
                if word not in words:
                    words.append(word)
    return words


def words_of(text: str) -> list[str]:
    return [w for w in re.split(r"[\W_]+", text.lower()) if w]


# -- reading the tags --------------------------------------------------------------------------------
def _tags(fh: BinaryIO) -> tuple[dict, dict, dict, int | None]:
    """(IFD0, EXIF IFD, GPS IFD, orientation the decoder already applied or None) of an open file."""
    head = fh.read(16)
    fh.seek(0)
    if head[:4] in _TIFF_MAGIC:
        return _tiff_tags(fh, head)
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return _raf_tags(fh)
    if head[4:12] == b"ftypcrx ":
        return _cr3_tags(fh)
    from PIL import Image

    from . import formats  # registers the HEIF plugin when pillow-heif is installed

    formats.register_plugins()
    with Image.open(fh) as img:
        exif = img.getexif()
        return dict(exif), exif.get_ifd(_EXIF_IFD), exif.get_ifd(_GPS_IFD), img.info.get("original_orientation")


def _tiff_tags(fh: BinaryIO, head: bytes) -> tuple[dict, dict, dict, None]:
    """A TIFF-structured file (TIFF, DNG and most camera RAW) read in place: only its IFDs are read."""
    from PIL import Image

    endian = "<" if head[:2] == b"II" else ">"
    exif = Image.Exif()
    exif.endian = endian
    exif.load_from_fp(fh, struct.unpack(endian + "I", head[4:8])[0])
    return dict(exif), exif.get_ifd(_EXIF_IFD), exif.get_ifd(_GPS_IFD), None


def _raf_tags(fh: BinaryIO) -> tuple[dict, dict, dict, None]:
    """Fujifilm RAF: the EXIF is that of the JPEG preview whose place the header gives."""
    from PIL import Image

    header = fh.read(92)
    offset, length = struct.unpack(">II", header[84:92])
    fh.seek(offset)
    jpeg = fh.read(min(length, 64 << 20))
    with Image.open(io.BytesIO(jpeg)) as img:
        exif = img.getexif()
        return dict(exif), exif.get_ifd(_EXIF_IFD), exif.get_ifd(_GPS_IFD), None


def _boxes(fh: BinaryIO, end: int):
    """ISO base media boxes from the current position to ``end``: (type, payload start, payload end)."""
    while fh.tell() + 8 <= end:
        start = fh.tell()
        size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", fh.read(8))[0]
            header = 16
        elif size == 0:
            size = end - start
        if size < header:
            return
        yield kind, start + header, min(start + size, end)
        fh.seek(start + size)


def _cr3_tags(fh: BinaryIO) -> tuple[dict, dict, dict, None]:
    """Canon CR3: TIFF structures in the CMT1 (IFD0), CMT2 (EXIF) and CMT4 (GPS) boxes of moov/uuid."""
    from PIL import Image

    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    found: dict[bytes, Image.Exif] = {}
    for kind, start, end in list(_boxes(fh, size)):
        if kind != b"moov":
            continue
        fh.seek(start)
        for inner, istart, iend in list(_boxes(fh, end)):
            fh.seek(istart)
            if inner != b"uuid" or fh.read(16) != _CR3_UUID:
                continue
            for name, cstart, cend in list(_boxes(fh, iend)):
                if name in (b"CMT1", b"CMT2", b"CMT4"):
                    fh.seek(cstart)
                    exif = Image.Exif()
                    exif.load(fh.read(cend - cstart))
                    found[name] = exif
    empty = Image.Exif()
    return (dict(found.get(b"CMT1", empty)), dict(found.get(b"CMT2", empty)), dict(found.get(b"CMT4", empty)), None)


# -- tags to fields ----------------------------------------------------------------------------------
def _fields(ifd0: dict, sub: dict, gps: dict, applied_orientation: int | None) -> dict:
    out: dict = {}
    taken = (
        parse_exif_time(sub.get(_ORIGINAL), sub.get(_OFFSET_ORIGINAL))
        or parse_exif_time(sub.get(_DIGITIZED), sub.get(_OFFSET_DIGITIZED))
        or parse_exif_time(ifd0.get(_DATETIME), sub.get(_OFFSET))
    )
    if taken is not None:
        out["taken_at"] = taken
    for name, value in (("camera_make", ifd0.get(_MAKE)), ("camera_model", ifd0.get(_MODEL)),
                        ("lens", sub.get(_LENS_MODEL))):
        text = _text(value)
        if text:
            out[name] = text
    position = _gps(gps)
    if position is not None:
        out["gps_lat"], out["gps_lon"] = position
    orientation = applied_orientation if applied_orientation is not None else ifd0.get(_ORIENTATION)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        out["orientation"] = orientation
    words = camera_words(out.get("camera_make"), out.get("camera_model"))
    if words:
        out[CAMERA_WORDS] = words
    return out


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.replace("\0", " ").strip()
    return text[:1000] or None


_EXIF_TIME = re.compile(r"^\s*(\d{4})[:\-](\d\d)[:\-](\d\d)[ T](\d\d):(\d\d):(\d\d)")
_OFFSET_TEXT = re.compile(r"^\s*([+-])(\d\d):?(\d\d)\s*$")


def parse_exif_time(value: object, offset: object = None) -> int | None:
    """An EXIF date-time ('2024:06:01 10:00:00') with its offset ('+09:00') as epoch seconds; without
    an offset the wall-clock time is read as UTC. None when absent or not a real time."""
    text = _text(value)
    match = _EXIF_TIME.match(text or "")
    if not match:
        return None
    try:
        when = datetime(*(int(g) for g in match.groups()), tzinfo=timezone.utc)
    except ValueError:  # '0000:00:00 00:00:00' and other blanks
        return None
    zone = _OFFSET_TEXT.match(_text(offset) or "")
    if zone:
        sign, hours, minutes = zone.groups()
        shift = timedelta(hours=int(hours), minutes=int(minutes))
        when -= shift if sign == "+" else -shift
    return int(when.timestamp())


def _degrees(value: object) -> float | None:
    try:
        parts = [float(v) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not parts or len(parts) > 3 or not all(math.isfinite(p) for p in parts):
        return None
    return sum(p / 60**i for i, p in enumerate(parts))


def _gps(gps: dict) -> tuple[float, float] | None:
    lat, lon = _degrees(gps.get(2)), _degrees(gps.get(4))
    if lat is None or lon is None:
        return None
    if (_text(gps.get(1)) or "N").upper().startswith("S"):
        lat = -lat
    if (_text(gps.get(3)) or "E").upper().startswith("W"):
        lon = -lon
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return round(lat, 7), round(lon, 7)
