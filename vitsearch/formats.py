"""The photo formats beyond Pillow's own: HEIC/HEIF (pillow-heif), AVIF (Pillow itself), camera RAW (rawpy).

HEIC and RAW need optional libraries (the ``heif`` and ``raw`` extras). When one is missing, a file of
that kind fails with a reason that names what to install, like any other bad file, never a traceback.

RAW files are decoded from their embedded JPEG preview when it is large enough for the model (a
camera writes one for its own screen: 1-2 MP up to full size), else demosaiced by LibRaw at half
size or full size. benchmarks/bench_formats.py measures the three ways.
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np
from PIL import Image

from .errors import ImageError

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
AVIF_EXTENSIONS = frozenset({".avif"})
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw"})
PHOTO_EXTENSIONS = HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS

INSTALL_HEIF = "pip install 'vitsearch[heif]'"
INSTALL_RAW = "pip install 'vitsearch[raw]'"
INSTALL_AVIF = "pip install --upgrade 'pillow>=11.3'"

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
# a preview counts as the photo when its aspect ratio is within this of the sensor's (no letterbox)
_ASPECT_TOLERANCE = 0.02

_registered: bool | None = None
_register_lock = threading.Lock()


def register_plugins() -> bool:
    """Register pillow-heif's opener with Pillow (once); False when pillow-heif is not installed."""
    global _registered
    if _registered is None:
        with _register_lock:  # the indexer reads EXIF in several threads
            if _registered is None:
                try:
                    from pillow_heif import register_heif_opener
                except ImportError:
                    _registered = False
                else:
                    register_heif_opener()
                    _registered = True
    return _registered


def have_avif() -> bool:
    from PIL import features

    try:
        return bool(features.check("avif"))
    except ValueError:  # a Pillow older than 11.2 does not know the feature
        return False


def have_rawpy() -> bool:
    try:
        import rawpy  # noqa: F401
    except ImportError:
        return False
    return True


def is_raw_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in RAW_EXTENSIONS


def is_raw_data(data: bytes) -> bool:
    """Whether ``data`` is a camera RAW file that Pillow would misread or not read: DNG, CR2, CR3, RAF,
    ORF, RW2 (NEF, ARW and the other plain-TIFF RAW formats are known by their file name only)."""
    head = data[:16]
    if head.startswith((b"FUJIFILMCCD-RAW", b"IIRO", b"IIU\0", b"MMOR")) or head[4:12] == b"ftypcrx ":
        return True
    if head[:4] == b"II*\0" and head[8:10] == b"CR":  # Canon CR2
        return True
    if head[:4] in (b"II*\0", b"MM\0*"):
        from .exif import _tiff_tags

        try:
            ifd0 = _tiff_tags(io.BytesIO(data), head)[0]
        except Exception:  # noqa: BLE001
            return False
        return 50706 in ifd0  # DNGVersion
    return False


def unreadable_reason(head: bytes, name: str | None = None) -> str | None:
    """Why Pillow could not identify data starting with ``head`` (named ``name``), when its format is
    one of these: the library to install when it is missing, else that the file is damaged. None for
    data of no format known here."""
    brand = head[8:12] if head[4:8] == b"ftyp" else b""
    ext = os.path.splitext(name or "")[1].lower()
    if brand in _HEIF_BRANDS or (not brand and ext in HEIF_EXTENSIONS):
        if not register_plugins():
            return f"HEIC/HEIF needs pillow-heif, which is not installed: {INSTALL_HEIF}"
        return "cannot open: a damaged or truncated HEIF file" if brand else None
    if brand in _AVIF_BRANDS or (not brand and ext in AVIF_EXTENSIONS):
        if not have_avif():
            return f"this Pillow cannot decode AVIF (it was built without libavif): {INSTALL_AVIF}"
        return "cannot open: a damaged or truncated AVIF file" if brand else None
    return None


# -- camera RAW -------------------------------------------------------------------------------------
RawSource = str | bytes


def load_raw(source: RawSource, draft: tuple[int, int] | None, max_pixels: int) -> Image.Image:
    """A camera RAW file (path or bytes) as an upright RGB image; ``info['vitsearch.size']`` is the
    photo's full upright size. ``draft`` is the smallest size the caller needs (see
    :func:`vitsearch.images.load_image`): a preview or half-size decode that covers it is used."""
    try:
        import rawpy
    except ImportError:
        raise ImageError(f"camera RAW needs rawpy, which is not installed: {INSTALL_RAW}") from None
    try:
        raw = rawpy.imread(source if isinstance(source, str) else io.BytesIO(source))
    except Exception as exc:  # noqa: BLE001 - LibRaw's errors, and whatever else a broken file causes
        raise ImageError(f"cannot decode RAW: {_libraw_reason(exc)}") from None
    with raw:
        width, height, flip = raw.sizes.width, raw.sizes.height, raw.sizes.flip
        if width < 1 or height < 1:
            raise ImageError(f"empty image: {width}x{height}")
        if width * height > max_pixels:
            raise ImageError(f"too many pixels: {width}x{height} (limit {max_pixels:,})")
        need = min(max(draft), width, height) if draft else min(width, height)
        img = _preview(raw, rawpy, need, width / height)
        if img is not None:
            img = _flip(img, flip)
        else:
            half = bool(draft) and min(width, height) // 2 >= need
            try:
                pixels = raw.postprocess(use_camera_wb=True, output_bps=8, half_size=half)
            except Exception as exc:  # noqa: BLE001
                raise ImageError(f"cannot decode RAW: {_libraw_reason(exc)}") from None
            img = Image.fromarray(pixels)  # LibRaw has applied the orientation
    img.info["vitsearch.size"] = (height, width) if flip & 4 else (width, height)
    return img


def _preview(raw, rawpy, need: int, aspect: float) -> Image.Image | None:
    """The embedded preview, drafted down toward ``need``, when its short side reaches ``need`` and
    it shows the whole photo (same aspect ratio); else None."""
    try:
        thumb = raw.extract_thumb()
    except Exception:  # noqa: BLE001 - none, or a broken one: demosaic the RAW data instead
        return None
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            img = Image.open(io.BytesIO(thumb.data))
        else:
            img = Image.fromarray(np.asarray(thumb.data))
        width, height = img.size
        if min(width, height) < need or abs(width / height - aspect) > _ASPECT_TOLERANCE * aspect:
            return None
        if img.format == "JPEG" and min(width, height) > need:
            scale = need / min(width, height)
            img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        img.load()
    except Exception:  # noqa: BLE001 - a broken preview: demosaic the RAW data instead
        return None
    img.info.pop("exif", None)  # the RAW's own orientation counts, never the preview's
    return img.convert("RGB")


def _flip(img: Image.Image, flip: int) -> Image.Image:
    """Apply LibRaw's orientation code (dcraw's ``flip``: 1 mirror, 2 upside down, 4 transpose)."""
    if not flip:
        return img
    arr = np.asarray(img)
    if flip & 2:
        arr = arr[::-1]
    if flip & 1:
        arr = arr[:, ::-1]
    if flip & 4:
        arr = arr.swapaxes(0, 1)
    return Image.fromarray(np.ascontiguousarray(arr))


_LIBRAW_REASONS = {
    "LibRawFileUnsupportedError": "not a RAW format LibRaw knows",
    "LibRawIOError": "input/output error (a truncated or damaged file?)",
    "LibRawDataError": "damaged image data",
    "LibRawTooBigError": "too large for LibRaw",
}


def _libraw_reason(exc: Exception) -> str:
    known = _LIBRAW_REASONS.get(type(exc).__name__)
    if known:
        return known
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).strip() or type(exc).__name__
