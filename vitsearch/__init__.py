"""vitsearch: find visually similar images with a Vision Transformer and Milvus.

    >>> from pathlib import Path
    >>> from vitsearch import VisualSearch
    >>> with VisualSearch("photos.db") as vs:            # a Milvus Lite file; or "http://host:19530"
    ...     summary = vs.index(["photos"])               # walk the folder, embed what is new
    ...     hits = vs.query("photos/chelsea.jpg", k=2)   # a path, PIL image, bytes or numpy array
    >>> summary.added, summary.failed
    (4, [])
    >>> [(hit.rank, Path(hit.path).name) for hit in hits]
    [(1, 'chelsea.jpg'), (2, 'chelsea_small_bright.png')]
"""

__version__ = "0.1.0"

from .errors import (
    FilterError,
    ImageError,
    ModelError,
    ModelMismatchError,
    StoreError,
    StoreLockedError,
    TrainingInterrupted,
    UsageError,
    VitsearchError,
)

# Public names, imported on first use so that `import vitsearch` (and so `vitsearch --help`) loads
# neither torch nor numpy nor PIL: name -> module that defines it.
_LAZY = {
    "VisualSearch": "api",
    "CopySummary": "api",
    "load_image": "images",
    "IndexSummary": "indexer",
    "ModelSpec": "checkpoint",
    "load_spec": "checkpoint",
    "Hit": "search",
    "FetchOptions": "fetch",
    "Progress": "progress",
    "Encoder": "embed",  # these three need torch
    "train": "training",
    "evaluate": "evaluation",
}

__all__ = [
    "CopySummary",
    "Encoder",
    "FetchOptions",
    "FilterError",
    "Hit",
    "ImageError",
    "IndexSummary",
    "ModelError",
    "ModelMismatchError",
    "ModelSpec",
    "Progress",
    "StoreError",
    "StoreLockedError",
    "TrainingInterrupted",
    "UsageError",
    "VisualSearch",
    "VitsearchError",
    "__version__",
    "evaluate",
    "load_image",
    "load_spec",
    "train",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vitsearch' has no attribute {name!r}")
