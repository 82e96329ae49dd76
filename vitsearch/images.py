"""Finding image files and decoding them into RGB pictures.

Decoding is defensive: every way a file can be bad ends in :class:`ImageError` with a short reason,
never in another exception, so that callers can skip the file and report it.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import formats
from .errors import ImageError, VitsearchError

# Pillow's own formats, and the photo formats of formats.py (HEIC/HEIF, AVIF, camera RAW)
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}) | formats.PHOTO_EXTENSIONS
MAX_PIXELS = 120_000_000  # ~ 11000 x 11000; larger files are refused as decompression bombs

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray


@dataclass
class FileResult:
    """One file out of ``encode_files`` (:class:`vitsearch.embed.Encoder`, or the encoder process): a
    vector, or the reason it has none. Defined here, free of torch, so that a result can cross from
    the embedding process to one that never imports torch."""

    index: int
    path: str
    vector: np.ndarray | None
    width: int = 0
    height: int = 0
    error: str | None = None


@dataclass(frozen=True)
class FileEntry:
    """A file found by :func:`discover`, with the stat fields the index compares."""

    path: str
    size: int
    mtime: float

    def matches(self, row: dict) -> bool:
        """Whether a stored row still describes this file: the same size and mtime (the file is then
        taken as unchanged without being opened, by the indexer and by queries alike)."""
        return row["size"] == self.size and row["mtime"] == self.mtime


@dataclass(frozen=True)
class Failure:
    """A file or URL that was skipped, and why. The reason is made one line here, for every caller:
    libraries' messages may hold newlines (libheif's end in one) or other control characters."""

    path: str
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", one_line(self.reason))

    def as_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


def one_line(text: str) -> str:
    """``text`` on one line: runs of white space (newlines too) become one space, and any other control
    character is written ``\\xHH``, as the CLI quotes such characters in a path."""
    import unicodedata

    text = " ".join(str(text).split())
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in EXTENSIONS


def check_roots(roots: Iterable[str | os.PathLike]) -> list[str]:
    """Absolute, normalised roots; raises if one does not exist."""
    out = []
    for root in roots:
        path = os.path.abspath(os.fspath(root))
        if not os.path.exists(path):
            raise VitsearchError(f"no such file or directory: {root}")
        out.append(path)
    if not out:
        raise VitsearchError("no path given")
    return out


def discover(roots: Iterable[str], failures: list[Failure]) -> Iterator[FileEntry]:
    """Yield image files under ``roots`` (recursive, extensions in any case, symlinks followed once).

    Files given directly are yielded whatever their extension. Unreadable folders and broken links
    are appended to ``failures``. Each file is yielded once even when several roots overlap. A folder
    reached both through a symlink and as itself is walked as itself: linked folders are walked
    after every folder the root holds without links, so a link never names a real folder's files.
    """
    seen_files: set[str] = set()
    seen_dirs: set[tuple[int, int]] = set()

    def entry(path: str) -> FileEntry | None:
        try:
            st = os.stat(path)
        except OSError as exc:
            failures.append(Failure(path, f"cannot stat: {exc.strerror or exc}"))
            return None
        if not stat.S_ISREG(st.st_mode):
            failures.append(Failure(path, "not a regular file"))
            return None
        return FileEntry(path, st.st_size, st.st_mtime)

    for root in roots:
        if not os.path.isdir(root):
            if root not in seen_files:
                seen_files.add(root)
                found = entry(root)
                if found:
                    yield found
            continue
        stack, linked = [root], []
        while stack or linked:
            if not stack:  # every folder reachable without a link is done: now those behind links
                stack, linked = list(reversed(linked)), []
            folder = stack.pop()
            try:
                st = os.stat(folder)
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    continue  # a symlink loop or a folder reached twice
                seen_dirs.add(key)
                with os.scandir(folder) as it:
                    children = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                failures.append(Failure(folder, f"cannot read folder: {exc.strerror or exc}"))
                continue
            subdirs = []
            for child in children:
                try:
                    is_dir = child.is_dir()
                except OSError:
                    is_dir = False
                if is_dir and child.is_symlink():
                    linked.append(child.path)
                elif is_dir:
                    subdirs.append(child.path)
                elif is_image_name(child.name) and child.path not in seen_files:
                    seen_files.add(child.path)
                    found = entry(child.path)
                    if found:
                        yield found
            stack.extend(reversed(subdirs))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB; transparency is composited on white, 16-bit and float scaled to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        arr = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # on white through the alpha as a mask: the same pixels as alpha_composite over an opaque
        # white RGBA (tested), without two more full-size RGBA copies (a 100-MP picture: 0.8 GB less)
        if img.mode == "La":  # premultiplied: PIL converts it to LA only
            img = img.convert("LA")
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, (0, 0), rgba)
        return out
    return img.convert("RGB")


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {arr.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    if arr.size == 0:
        raise ImageError(f"empty image: array of shape {arr.shape}")
    if arr.dtype.kind not in "buif":
        raise ImageError(f"an array of {arr.dtype} is not an image (expected numbers)")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError("the array holds NaN or infinite values")
    if arr.dtype != np.uint8:
        top = float(arr.max(initial=0))
        if arr.dtype.kind == "f":
            arr = arr * 255.0 if top <= 1.0 else arr  # 0..1, else 0..255
        elif top > 255:  # 16-bit (or wider) samples, scaled as a 16-bit PIL image is
            arr = arr.astype(np.float64) * (255.0 / (65535.0 if top <= 65535 else top))
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def load_image(source: ImageInput, *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``source`` (path, bytes, PIL image or numpy array) into an RGB PIL image.

    ``draft`` is the smallest (width, height) the caller needs: JPEGs are then decoded at a reduced
    scale (PIL ``draft``), HEIC from its embedded thumbnail and camera RAW from its embedded preview
    when those are large enough, which is much faster for large photos. EXIF orientation is applied.
    A file or data read here records its own upright size in ``info['vitsearch.size']`` (the drafted
    picture may be smaller).

        >>> load_image("photos/chelsea.jpg").size
        (451, 300)
        >>> load_image(b"not an image")
        Traceback (most recent call last):
        vitsearch.errors.ImageError: not a recognised image format
    """
    with quiet_pil():
        return _load_image(source, draft)


@contextlib.contextmanager
def quiet_pil() -> Iterator[None]:
    """PIL's warnings off, for every place that opens a picture: it warns about odd but readable files
    (TIFF tags past the end, bad EXIF ...), which either decode or raise ImageError, so that a run over
    many files stays free of noise; and at open above its own 89-MP guess, where MAX_PIXELS is the
    limit that counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _load_image(source: ImageInput, draft: tuple[int, int] | None) -> Image.Image:
    opened_here = not isinstance(source, Image.Image)
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        return _to_rgb(_array_to_image(source))
    else:
        name = "image data" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
        with _open_errors(source, name):
            formats.register_plugins()
            if isinstance(source, (bytes, bytearray, memoryview)):
                if len(source) == 0:
                    raise ImageError("empty data")
                data = bytes(source)
                if formats.is_raw_data(data):
                    return formats.load_raw(data, draft, MAX_PIXELS)
                img = Image.open(io.BytesIO(data))
            else:
                if os.path.isdir(name):
                    raise ImageError("is a directory")
                if os.path.getsize(name) == 0:
                    raise ImageError("empty file")
                if formats.is_raw_name(name):
                    return formats.load_raw(name, draft, MAX_PIXELS)
                img = Image.open(name)
    try:
        width, height = img.size
        _check_size(width, height)
        # JPEG: a reduced-scale decode; HEIF: the smallest embedded thumbnail that covers the size
        if draft and opened_here and img.format in ("JPEG", "HEIF"):  # never mutate a caller's image
            short = min(width, height)
            need = max(draft)
            if short > need:
                scale = need / short
                img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8) if opened_here else False
        img.load()
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img)
        if opened_here:
            img.info["vitsearch.size"] = (height, width) if turned else (width, height)
        return img
    except Exception as exc:  # PIL raises many types on corrupt data; all mean "cannot decode"
        if opened_here:
            img.close()  # now, not whenever the garbage collector gets to it
        if isinstance(exc, ImageError):
            raise
        reason = str(exc) or type(exc).__name__
        raise ImageError(f"cannot decode: {reason}") from None


def check_file(path: str | os.PathLike) -> None:
    """Refuse a file that :func:`load_image` would refuse on its header alone, reading only its first
    bytes: :class:`ImageError` when it is empty, of no image format known here (or of one whose library
    is missing), or has too many pixels; OSError when it cannot be read. Camera RAW files (known by
    their name) are left to LibRaw. The indexer asks this before it reads a file whole to hash it, so
    that a large file that is no image costs no more than a small one."""
    name = os.fspath(path)
    if formats.is_raw_name(name):
        return
    with open(name, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ImageError("empty file")
        _check_header(fh, name, name)


def check_data(data: bytes) -> None:
    """:func:`check_file` for an image's bytes (camera RAW data is left to LibRaw)."""
    if len(data) == 0:
        raise ImageError("empty data")
    if not formats.is_raw_data(bytes(data)):
        _check_header(io.BytesIO(data), data, "image data")


def _check_header(fh, source: ImageInput, name: str) -> None:
    with quiet_pil(), _open_errors(source, name):
        formats.register_plugins()
        with Image.open(fh) as img:
            _check_size(*img.size)


@contextlib.contextmanager
def _open_errors(source: ImageInput, name: str) -> Iterator[None]:
    """Whatever opening ``source`` (called ``name`` in messages) raises, as :class:`ImageError` with a short reason."""
    try:
        yield
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(formats.unreadable_reason(_head(source), name) or "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels (decompression bomb?): {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot open: {exc}") from None


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(f"too many pixels: {width}x{height} (limit {MAX_PIXELS:,})")
    if width < 1 or height < 1:
        raise ImageError(f"empty image: {width}x{height}")


def _head(source: ImageInput) -> bytes:
    """The first bytes of a file or of data (empty when unreadable), to say what format it is."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:32])
    try:
        with open(os.fspath(source), "rb") as fh:
            return fh.read(32)
    except (OSError, TypeError):
        return b""


class NamedBytes(bytes):
    """An image's bytes that messages call by a name (the URL they were fetched from)."""

    name: str = ""


def named_bytes(data: bytes, name: str) -> NamedBytes:
    out = NamedBytes(data)
    out.name = name
    return out


def describe(source: ImageInput) -> str:
    """A short name for an image input, for messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if getattr(source, "name", ""):
        return source.name
    if isinstance(source, Image.Image):
        return f"PIL image {source.size[0]}x{source.size[1]}"
    if isinstance(source, np.ndarray):
        return f"array {source.shape}"
    return f"{len(source)} bytes"


