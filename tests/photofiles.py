"""Photo files for tests, written by the libraries themselves or by hand: JPEG/HEIC/AVIF with EXIF
(Pillow, pillow-heif), and a minimal DNG (camera RAW: a TIFF with a Bayer mosaic and Adobe's DNG tags,
written here byte by byte, so no RAW sample with a licence is needed). LibRaw (rawpy) reads these DNGs."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
_SIZES = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, SRATIONAL: 8}


class _Ifd(list):
    """[(tag, type, values)]; a value list of one _Ifd is written as a pointer to that IFD."""


def _pack(kind: int, values) -> bytes:
    if kind == ASCII:
        return values.encode("ascii") + b"\0"
    if kind == BYTE:
        return bytes(values)
    if kind == SHORT:
        return struct.pack(f"<{len(values)}H", *values)
    if kind == LONG:
        return struct.pack(f"<{len(values)}I", *values)
    if kind in (RATIONAL, SRATIONAL):
        fmt = "<ii" if kind == SRATIONAL else "<II"
        return b"".join(struct.pack(fmt, *pair) for pair in values)
    raise ValueError(kind)


def _write_ifd(out: bytearray, ifd: _Ifd, blobs: dict) -> int:
    """Append ``ifd`` (and what it points to) to ``out``; returns its offset."""
    children = {}
    for tag, kind, values in ifd:
        if isinstance(values, _Ifd):
            children[tag] = _write_ifd(out, values, blobs)
    if len(out) % 2:
        out += b"\0"
    start = len(out)
    entries = sorted(ifd, key=lambda e: e[0])
    table_size = 2 + 12 * len(entries) + 4
    data_at = start + table_size
    table = bytearray(struct.pack("<H", len(entries)))
    data = bytearray()
    for tag, kind, values in entries:
        if isinstance(values, _Ifd):
            kind, payload, count = LONG, struct.pack("<I", children[tag]), 1
        elif isinstance(values, bytes):  # a blob (strip) written later: its offset
            kind, payload, count = LONG, struct.pack("<I", blobs[values]), 1
        else:
            payload = _pack(kind, values)
            count = len(payload) // _SIZES[kind]
        if len(payload) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
        else:
            if len(data) % 2:
                data += b"\0"
            table += struct.pack("<HHII", tag, kind, count, data_at + len(data))
            data += payload
    table += b"\0\0\0\0"
    out += table + data
    return start


def tiff_bytes(ifd0: _Ifd, blobs: list[bytes]) -> bytes:
    out = bytearray(b"II*\0\0\0\0\0")
    offsets = {}
    for blob in blobs:
        offsets[blob] = len(out)
        out += blob
    first = _write_ifd(out, ifd0, offsets)
    out[4:8] = struct.pack("<I", first)
    return bytes(out)


def _rational(x: float, den: int = 1_000_000) -> tuple[int, int]:
    return (round(x * den), den)


def mosaic(rgb: np.ndarray) -> np.ndarray:
    """An RGGB Bayer mosaic (16-bit) of an RGB picture."""
    h, w, _ = rgb.shape
    cfa = np.empty((h, w), dtype=np.uint16)
    wide = rgb.astype(np.uint16) * 257
    cfa[0::2, 0::2] = wide[0::2, 0::2, 0]
    cfa[0::2, 1::2] = wide[0::2, 1::2, 1]
    cfa[1::2, 0::2] = wide[1::2, 0::2, 1]
    cfa[1::2, 1::2] = wide[1::2, 1::2, 2]
    return cfa


def dng_bytes(rgb: np.ndarray, *, make="Vitsearch", model="Test Camera", orientation: int = 1,
              taken: str | None = None, offset: str | None = None, lens: str | None = None,
              gps: tuple[float, float] | None = None, preview: Image.Image | None = None) -> bytes:
    h, w, _ = rgb.shape
    raw = mosaic(rgb).tobytes()
    blobs = [raw]
    ifd0 = _Ifd([
        (254, LONG, [0]), (256, LONG, [w]), (257, LONG, [h]), (258, SHORT, [16]), (259, SHORT, [1]),
        (262, SHORT, [32803]), (271, ASCII, make), (272, ASCII, model), (273, LONG, raw), (274, SHORT, [orientation]),
        (277, SHORT, [1]), (278, LONG, [h]), (279, LONG, [len(raw)]), (284, SHORT, [1]),
        (33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2]),
        (50706, BYTE, [1, 4, 0, 0]), (50707, BYTE, [1, 1, 0, 0]), (50708, ASCII, f"{make} {model}"),
        (50717, LONG, [65535]),
        (50721, SRATIONAL, [(10000, 10000), (0, 1), (0, 1), (0, 1), (10000, 10000), (0, 1), (0, 1), (0, 1), (10000, 10000)]),
        (50728, RATIONAL, [(1, 1), (1, 1), (1, 1)]), (50778, SHORT, [21]),
    ])
    exif = _Ifd()
    if taken:
        exif.append((36867, ASCII, taken))
    if offset:
        exif.append((36881, ASCII, offset))
    if lens:
        exif.append((42036, ASCII, lens))
    if exif:
        ifd0.append((34665, LONG, exif))
    if gps:
        lat, lon = gps

        def dms(x):
            d, m, s = _dms(x)
            return [(int(d), 1), (int(m), 1), _rational(s, 10000)]

        ifd0.append((34853, LONG, _Ifd([
            (0, BYTE, [2, 3, 0, 0]), (1, ASCII, "N" if lat >= 0 else "S"), (2, RATIONAL, dms(lat)),
            (3, ASCII, "E" if lon >= 0 else "W"), (4, RATIONAL, dms(lon)),
        ])))
    if preview is not None:
        buf = io.BytesIO()
        preview.convert("RGB").save(buf, "JPEG", quality=90)
        jpeg = buf.getvalue()
        blobs.append(jpeg)
        ifd0.append((330, LONG, _Ifd([
            (254, LONG, [1]), (256, LONG, [preview.width]), (257, LONG, [preview.height]),
            (258, SHORT, [8, 8, 8]), (259, SHORT, [7]), (262, SHORT, [6]), (273, LONG, jpeg),
            (277, SHORT, [3]), (278, LONG, [preview.height]), (279, LONG, [len(jpeg)]), (284, SHORT, [1]),
        ])))
    return tiff_bytes(ifd0, blobs)


def write_dng(path: Path, rgb: np.ndarray, **kwargs) -> Path:
    Path(path).write_bytes(dng_bytes(rgb, **kwargs))
    return Path(path)


def exif_bytes(*, taken: str | None = None, offset: str | None = None, make: str | None = None,
               model: str | None = None, lens: str | None = None, gps: tuple[float, float] | None = None,
               orientation: int | None = None) -> bytes:
    """An EXIF block (what Pillow's ``save(exif=...)`` takes) with the given tags."""
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if orientation:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    if taken:
        sub[0x9003] = taken
    if offset:
        sub[0x9011] = offset
    if lens:
        sub[0xA434] = lens
    if gps:
        lat, lon = gps
        exif.get_ifd(0x8825).update({1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W",
                                     4: _dms(lon)})
    return exif.tobytes()


def _dms(x: float) -> tuple[float, float, float]:
    x = abs(x)
    d = int(x)
    m = int((x - d) * 60)
    return (float(d), float(m), round((x - d - m / 60) * 3600, 4))


def save_photo(path, img: Image.Image, fmt: str, **exif):
    """``img`` saved to a path or file object as JPEG, HEIF (pillow-heif) or AVIF (Pillow) with the EXIF
    tags ``exif``; returns ``path`` (as a Path when it is one)."""
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    img.save(path, fmt, exif=exif_bytes(**exif), quality=90)
    return Path(path) if isinstance(path, (str, Path)) else path
