"""Batched embedding: decode in worker processes, run the shared ViT core, return float32 vectors.

Device and precision are fixed when an :class:`Encoder` is built. ``encode`` takes images of any
kind; ``encode_files`` streams a list of files through DataLoader workers so that the model never
waits for PIL and memory stays bounded whatever the number of files.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .checkpoint import ModelSpec, load_spec
from .device import Normalise, autocast, choose_device, choose_precision, default_batch_size, default_workers
from .errors import ImageError, check_count
from .images import FileResult, ImageInput, describe, load_image
from .model import VitBackbone, load_backbone
from .preprocess import Preprocessing

DECODE_CHUNK = 16  # files a decode worker takes at a time; model batches are assembled from chunks
# Decoded images the workers may hold ready for the model, in bytes (uint8 pixels: 37 KB an image
# at 112 px, 150 KB at 224 px), at most LOOKAHEAD_MAX images and at least two model batches. A deep
# queue lets the workers keep decoding while the model loads (imports and weights take seconds on a
# small CPU) and through any pause of the model.
LOOKAHEAD_BYTES = 64 << 20
LOOKAHEAD_MAX = 1024


class _FileDataset(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], preprocessing: Preprocessing):
        self.paths = paths
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            return (index, *prepare_image(path, self.preprocessing), None)
        except ImageError as exc:
            return index, None, 0, 0, str(exc)
        except Exception as exc:  # noqa: BLE001 - a worker must never die on one file
            return index, None, 0, 0, f"cannot decode: {exc}"


def prepare_image(source: str | bytes, preprocessing: Preprocessing) -> tuple[np.ndarray, int, int]:
    """A file or an image's bytes as the model takes it: (uint8 CHW pixels, original width, height)."""
    img = load_image(source, draft=preprocessing.draft_size)
    width, height = _original_size(io.BytesIO(source) if isinstance(source, bytes) else source, img)
    return preprocessing.to_uint8(img), width, height


def _original_size(path, img) -> tuple[int, int]:
    """The stored width/height: the file's own size after EXIF rotation, not the draft's."""
    from PIL import Image

    if "vitsearch.size" in img.info:  # recorded by load_image
        return img.info["vitsearch.size"]
    try:
        with Image.open(path) as raw:
            width, height = raw.size
            orientation = raw.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001
        return img.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _collate(items):
    return items


def worker_init(_worker_id: int) -> None:
    """Tie a decode worker to its parent: die with it, leave Ctrl-C to it, let go of inherited store locks.

    Forked workers inherit every descriptor, Milvus Lite's flock'ed LOCK file included; a worker that
    outlived a killed indexer (kill -9) kept the store locked. PR_SET_PDEATHSIG ends the worker when
    its parent dies, and closing the inherited lock descriptor means it never holds the store.
    """
    from .encoder_process import follow_parent

    follow_parent()
    if sys.platform.startswith("linux"):
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
        try:
            for fd in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    continue
                if target.endswith(".db/LOCK"):
                    os.close(int(fd))
        except OSError:
            pass


class Encoder:
    """Images in, L2-normalised CLS embeddings out.

    ``model`` is a hub id, a local ``save_pretrained`` directory or a :class:`ModelSpec`; by default
    the bundled model. Device and precision are fixed here (``auto``: CUDA if present; bf16 where the
    hardware has it, else fp32).

        >>> from PIL import Image
        >>> enc = Encoder(device="cpu")                   # the bundled model
        >>> enc.encode("photos/chelsea.jpg").shape        # one image -> (dim,)
        (384,)
        >>> vectors = enc.encode(["photos/chelsea.jpg", Image.open("photos/chelsea_small_bright.png"),
        ...                       open("photos/rocket.jpg", "rb").read()])
        >>> vectors.shape, vectors.dtype                  # a list -> (n, dim), L2-normalised
        ((3, 384), dtype('float32'))
        >>> bool(vectors[0] @ vectors[1] > 0.95), bool(vectors[0] @ vectors[2] < 0.5)   # cosine similarity
        (True, True)
    """

    def __init__(
        self,
        model: str | ModelSpec | None = None,
        *,
        device: str | None = "auto",
        precision: str | None = "auto",
        batch_size: int | None = None,
        num_workers: int | None = None,
        lazy: bool = False,
    ):
        """``lazy=True`` loads the weights on the first embedding instead of now: ``encode_files``
        then starts its decode workers first, and they decode while the model loads."""
        spec = model if isinstance(model, ModelSpec) else load_spec(model)
        self._setup(spec, None, device, precision, batch_size, num_workers)
        if not lazy:
            self.backbone  # noqa: B018 - load now, so that a broken model fails here

    @classmethod
    def wrap(
        cls,
        backbone: VitBackbone,
        spec: ModelSpec,
        *,
        device: str | None = "auto",
        precision: str | None = "auto",
        batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> Encoder:
        """An encoder around a backbone already in memory (training validates with it)."""
        self = cls.__new__(cls)
        self._setup(spec, backbone, device, precision, batch_size, num_workers)
        return self

    def _setup(self, spec, backbone, device, precision, batch_size, num_workers) -> None:
        if batch_size is not None:
            batch_size = check_count(batch_size, "batch_size")
        self.spec = spec
        self.device = choose_device(device)
        self.precision = choose_precision(self.device, precision)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.num_workers = default_workers(self.device) if num_workers is None else num_workers
        self._backbone: VitBackbone | None = backbone.to(self.device) if backbone is not None else None
        self._load_lock = threading.Lock()
        self._normalise = Normalise.of(spec.preprocessing).to(self.device)

    @property
    def backbone(self) -> VitBackbone:
        """The model, loaded on first use when the encoder was made ``lazy``."""
        if self._backbone is None:
            with self._load_lock:
                if self._backbone is None:
                    self._backbone = load_backbone(self.spec).to(self.device)
        return self._backbone

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing

    def __repr__(self) -> str:
        return f"Encoder(model={self.spec.name!r}, device={self.device!r}, precision={self.precision!r})"

    def _autocast(self):
        return autocast(self.device, self.precision)

    @torch.inference_mode()
    def embed_pixels(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embed a uint8 NCHW batch already resized and cropped by :attr:`preprocessing`."""
        x = torch.as_tensor(batch)
        if self.device == "cuda" and not x.is_pinned():
            x = x.pin_memory()  # uint8, so a small copy; the upload below then overlaps with the host
        x = x.to(self.device, non_blocking=True).float()
        x = self._normalise(x)
        with self._autocast():
            out = self.backbone(x)
        return out.float().cpu().numpy()

    def encode(self, images: ImageInput | Sequence[ImageInput], *, batch_size: int | None = None) -> np.ndarray:
        """Embed one image (→ 1-D array) or a list of images (→ 2-D array, one row each).

        Images may be paths, bytes, PIL images or numpy arrays. A bad image raises
        :class:`ImageError` naming it.
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        size = check_count(self.batch_size if batch_size is None else batch_size, "batch_size")
        prep = self.preprocessing
        chunks = []
        for start in range(0, len(items), size):
            arrays = []
            for item in items[start : start + size]:
                try:
                    arrays.append(prep.to_uint8(load_image(item, draft=prep.draft_size)))
                except ImageError as exc:
                    raise ImageError(f"{describe(item)}: {exc}") from None
            chunks.append(self.embed_pixels(np.stack(arrays)))
        out = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)
        return out[0] if single else out

    def prepare(self, data: bytes) -> tuple[np.ndarray, int, int]:
        """Decode and preprocess an image's bytes exactly as :meth:`encode_files` does a file, on any
        thread (the indexer's fetch threads): (pixels for :meth:`embed_pixels`, width, height)."""
        return prepare_image(data, self.preprocessing)

    def encode_files(self, paths: Sequence[str], *, batch_size: int | None = None) -> Iterator[FileResult]:
        """Stream ``paths`` through decode workers and the model, in order; bad files yield an error.

        Workers decode chunks of up to :data:`DECODE_CHUNK` files and the model gets batches of
        ``batch_size``: had each worker decoded a whole model batch, one batch of 12-MP JPEGs would
        keep a single worker busy while the others sat idle, and more workers would not help
        (benchmarks/bench_gpu.py; figures on docs/performance.md).
        """
        size = batch_size or self.batch_size
        chunk = min(size, DECODE_CHUNK)
        workers = self.num_workers if len(paths) > chunk else 0
        loader = torch.utils.data.DataLoader(
            _FileDataset(paths, self.preprocessing),
            batch_size=chunk,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=False,  # the items are numpy arrays; embed_pixels copies each stacked batch
            prefetch_factor=max(2, -(-self._lookahead(size) // (chunk * workers))) if workers else None,
            persistent_workers=False,
            worker_init_fn=worker_init if workers else None,
        )
        chunks = iter(loader)  # the workers start decoding now ...
        self.backbone  # noqa: B018 - ... while a lazy encoder loads its model
        pending: list = []
        good = 0
        for items in chunks:
            for item in items:
                pending.append(item)
                good += item[1] is not None
                if good == size:  # exactly ``size`` images per model call
                    yield from self._embed_items(paths, pending)
                    pending, good = [], 0
        yield from self._embed_items(paths, pending)

    def _lookahead(self, size: int) -> int:
        """How many decoded images the workers may hold ready: see :data:`LOOKAHEAD_BYTES`."""
        height, width = self.preprocessing.input_size
        return max(2 * size, min(LOOKAHEAD_MAX, LOOKAHEAD_BYTES // (3 * height * width)))

    def _embed_items(self, paths: Sequence[str], items: list) -> Iterator[FileResult]:
        good = [it for it in items if it[1] is not None]
        vectors = self.embed_pixels(np.stack([it[1] for it in good])) if good else None
        row = 0
        for index, arr, width, height, error in items:
            if arr is None:
                yield FileResult(index, paths[index], None, error=error)
            else:
                yield FileResult(index, paths[index], vectors[row], width, height)
                row += 1
