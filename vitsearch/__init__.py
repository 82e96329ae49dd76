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

from .api import VisualSearch  # noqa: E402
from .errors import (  # noqa: E402
    FilterError,
    ImageError,
    ModelError,
    ModelMismatchError,
    StoreError,
    StoreLockedError,
    VitsearchError,
)
from .fetch import FetchOptions  # noqa: E402
from .images import load_image  # noqa: E402
from .indexer import IndexSummary  # noqa: E402
from .checkpoint import ModelSpec, load_spec  # noqa: E402
from .search import Hit  # noqa: E402

__all__ = [
    "Encoder",
    "FetchOptions",
    "FilterError",
    "Hit",
    "ImageError",
    "IndexSummary",
    "ModelError",
    "ModelMismatchError",
    "ModelSpec",
    "StoreError",
    "StoreLockedError",
    "VisualSearch",
    "VitsearchError",
    "__version__",
    "evaluate",
    "load_image",
    "load_spec",
    "train",
]


def __getattr__(name: str):
    # These need torch; import them on first use so that `import vitsearch` stays light.
    if name == "Encoder":
        from .embed import Encoder

        return Encoder
    if name == "train":
        from .training import train

        return train
    if name == "evaluate":
        from .evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'vitsearch' has no attribute {name!r}")
