"""A generated folder of every kind of awkward input: bad files that must be skipped with a reason,
odd but valid files that must be indexed correctly, and awkward folder structure."""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from helpers import photo
from photofiles import dng_bytes, exif_bytes
from PIL import Image, ImageOps

try:
    import pillow_heif
except ImportError:  # the heif extra; in the test extra, so CI has it
    pillow_heif = None
try:
    import rawpy
except ImportError:  # the raw extra; likewise
    rawpy = None


@dataclass
class Corpus:
    root: Path
    bad: dict[str, str] = field(default_factory=dict)  # path relative to root -> regex its reason matches
    good: dict[str, tuple[int, int]] = field(default_factory=dict)  # relative path -> stored (width, height)
    # relative path -> the RGB picture its vector must be the vector of (checked for the odd formats)
    expected: dict[str, Image.Image] = field(default_factory=dict)


def _png_with_bad_chunk() -> bytes:
    buf = io.BytesIO()
    photo(21, (40, 30)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.find(b"IDAT")
    data[idat + 8] ^= 0xFF  # flip a byte of the compressed data: the chunk's CRC no longer matches
    return bytes(data)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG header that declares a huge image (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def write_corpus(root: Path) -> Corpus:
    c = Corpus(root)
    root.mkdir(parents=True, exist_ok=True)
    bad = root / "bad"
    bad.mkdir()

    # -- bad files: skipped, each with a reason ----------------------------------------------------
    (bad / "empty.jpg").write_bytes(b"")
    c.bad["bad/empty.jpg"] = "empty file"
    (bad / "text.jpg").write_text("just some text\n")
    c.bad["bad/text.jpg"] = "not a recognised image format"
    (bad / "page.png").write_text("<!doctype html><html><body>404 Not Found</body></html>")
    c.bad["bad/page.png"] = "not a recognised image format"
    jpeg = io.BytesIO()
    photo(1, (400, 300)).save(jpeg, "JPEG", quality=90)
    (bad / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 3])
    c.bad["bad/truncated.jpg"] = "cannot decode: .*truncated"
    png = io.BytesIO()
    photo(2, (400, 300)).save(png, "PNG")
    (bad / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    c.bad["bad/truncated.png"] = "cannot decode: .*truncated"
    (bad / "bad_chunk.png").write_bytes(_png_with_bad_chunk())
    c.bad["bad/bad_chunk.png"] = "cannot (open|decode): .*(crc|CRC|broken|decompress)"
    (bad / "bomb.png").write_bytes(_png_declaring(40000, 40000))
    c.bad["bad/bomb.png"] = "too many pixels"
    (bad / "dangling.jpg").symlink_to(bad / "never-there.jpg")
    c.bad["bad/dangling.jpg"] = "cannot stat: No such file"
    if os.getuid() != 0:  # root reads any file, so only an ordinary user can test this one
        photo(3).save(bad / "unreadable.png")
        os.chmod(bad / "unreadable.png", 0)
        c.bad["bad/unreadable.png"] = "cannot read: Permission denied"
        (bad / "locked").mkdir()
        photo(4).save(bad / "locked" / "inside.png")
        os.chmod(bad / "locked", 0)
        c.bad["bad/locked"] = "cannot read folder: Permission denied"
    photo_bytes = {}
    for fmt in ("AVIF", "HEIF") if pillow_heif else ("AVIF",):
        if fmt == "HEIF":
            pillow_heif.register_heif_opener()
        buf = io.BytesIO()
        photo(17, (300, 200)).save(buf, fmt, quality=80)
        photo_bytes[fmt] = buf.getvalue()
    (bad / "truncated.avif").write_bytes(photo_bytes["AVIF"][: len(photo_bytes["AVIF"]) // 2])
    c.bad["bad/truncated.avif"] = "cannot (open|decode): "
    (bad / "text.avif").write_text("an AVIF in name only\n")
    c.bad["bad/text.avif"] = "not a recognised image format"
    if pillow_heif:
        (bad / "truncated.heic").write_bytes(photo_bytes["HEIF"][: len(photo_bytes["HEIF"]) // 2])
        c.bad["bad/truncated.heic"] = "cannot (open|decode): "
        (bad / "header_only.HEIC").write_bytes(photo_bytes["HEIF"][:40])
        c.bad["bad/header_only.HEIC"] = "cannot (open|decode): |not a recognised"
    if rawpy:
        (bad / "truncated.dng").write_bytes(dng_bytes(np.zeros((64, 96, 3), np.uint8))[:200])
        c.bad["bad/truncated.dng"] = "cannot decode RAW: "
        (bad / "text.nef").write_text("a Nikon RAW in name only\n")
        c.bad["bad/text.nef"] = "cannot decode RAW: (not a RAW format|input/output error)"
    latin1 = os.fsencode(bad) + b"/caf\xe9.png"  # a Latin-1 name: not valid UTF-8
    photo(5).save(latin1.decode("utf-8", "surrogateescape"), "PNG")
    c.bad[os.path.relpath(latin1.decode("utf-8", "surrogateescape"), root)] = "not valid UTF-8"

    # -- odd but valid files: indexed, pixels as a viewer shows them -------------------------------
    odd = root / "odd"
    odd.mkdir()

    def good(rel: str, img: Image.Image, expected: Image.Image | None = None, **save) -> None:
        img.save(root / rel, **save)
        ref = (expected if expected is not None else img).convert("RGB")
        c.good[rel] = ref.size
        c.expected[rel] = ref

    base = photo(6, (64, 48))
    cmyk = base.convert("CMYK")
    good("odd/cmyk.jpg", cmyk, cmyk.convert("RGB"), quality=95)
    c.expected["odd/cmyk.jpg"] = Image.open(root / "odd/cmyk.jpg").convert("RGB")  # after JPEG's loss
    grey16 = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    good("odd/grey16.png", grey16, base.convert("L"))
    la = base.convert("LA")
    la.putalpha(255)
    good("odd/grey_alpha.png", la, base.convert("L"))
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    on_white = Image.alpha_composite(Image.new("RGBA", pal.size, "white"), pal.convert("RGBA"))
    good("odd/palette_transparent.png", pal, on_white, transparency=0)
    frames = [photo(s, (48, 48)).convert("P", palette=Image.ADAPTIVE) for s in (7, 8, 9)]
    good("odd/animated.gif", frames[0], frames[0].convert("RGB"), save_all=True, append_images=frames[1:], duration=100)
    good("odd/photo.webp", base, lossless=True)
    good("odd/photo.tiff", base)
    good("odd/photo.bmp", base)
    tall = photo(10, (40, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    good("odd/exif_rotated.jpg", tall, quality=95, exif=exif.tobytes())
    stored = Image.open(root / "odd/exif_rotated.jpg").convert("RGB")  # as saved: lying on its side
    c.expected["odd/exif_rotated.jpg"] = Image.fromarray(np.rot90(np.asarray(stored), k=-1))  # upright, no EXIF
    c.good["odd/exif_rotated.jpg"] = (80, 40)
    # phone and camera formats, lying on their side like the JPEG above
    good("odd/phone.avif", tall, quality=90, exif=exif_bytes(orientation=6, make="Google", model="Pixel 8"))
    c.expected["odd/phone.avif"] = ImageOps.exif_transpose(Image.open(root / "odd/phone.avif")).convert("RGB")
    c.good["odd/phone.avif"] = (80, 40)
    if pillow_heif:
        good("odd/iphone.HEIC", tall, format="HEIF", quality=90, exif=exif_bytes(orientation=6, make="Apple"))
        c.expected["odd/iphone.HEIC"] = Image.open(root / "odd/iphone.HEIC").convert("RGB")  # libheif turns it
        c.good["odd/iphone.HEIC"] = (80, 40)
    if rawpy:
        (root / "odd/camera.dng").write_bytes(dng_bytes(np.asarray(photo(18, (64, 48))), orientation=6))
        with rawpy.imread(str(root / "odd/camera.dng")) as raw:  # LibRaw's picture, turned upright
            c.expected["odd/camera.dng"] = Image.fromarray(raw.postprocess(use_camera_wb=True, output_bps=8))
        c.good["odd/camera.dng"] = (48, 64)
    good("odd/one_pixel.png", Image.new("RGB", (1, 1), (200, 30, 30)))
    good("odd/UPPER.JPG", photo(11, (60, 40)), quality=95)  # small: no draft decoding, exact pixels
    c.expected["odd/UPPER.JPG"] = Image.open(root / "odd/UPPER.JPG").convert("RGB")
    good("odd/UPPER.PNG", photo(12))

    # -- awkward names and structure: all indexed ---------------------------------------------------
    weird = root / "names"
    weird.mkdir()
    good("names/café 日本 ✓.png", photo(13))
    good("names/ spaces and 'quotes\" %_like.png", photo(14))
    (root / "dir.jpg").mkdir()  # a folder named like an image: walked, not opened
    good("dir.jpg/inside.png", photo(15))
    (root / "names" / "loop").symlink_to(root)  # a symlink loop: visited once, no error
    deep = root
    for i in range(20):
        deep = deep / (f"{i:02d}-" + "d" * 150)
    deep.mkdir(parents=True)  # a path of about 3,100 characters
    good(os.path.relpath(deep / ("f" * 200 + ".png"), root), photo(16))
    return c
