"""Query: example images → vectors (one batch) → hits with scores and metadata (one search call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from .images import ImageInput
from .store import Store

if TYPE_CHECKING:
    from .embed import Encoder


@dataclass
class Hit:
    rank: int
    score: float  # cosine similarity, higher is closer
    path: str
    id: int
    metadata: dict[str, Any] = field(default_factory=dict)  # size, mtime, sha256, width, height, user fields

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": round(self.score, 6), "path": self.path, "id": self.id, **self.metadata}

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]


def to_hits(rows: list[dict]) -> list[Hit]:
    hits = []
    for rank, row in enumerate(rows, start=1):
        row = dict(row)
        score, path, id_ = row.pop("score"), row.pop("path", ""), row.pop("id")
        hits.append(Hit(rank, score, path, id_, row))
    return hits


def search_images(
    encoder: "Encoder",
    store: Store,
    images: Sequence[ImageInput],
    *,
    k: int = 10,
    filter: str | None = None,
) -> list[list[Hit]]:
    """The ``k`` nearest indexed images of each query image."""
    if not images:
        return []
    vectors = encoder.encode(list(images))
    results = store.search(vectors.tolist(), k, filter=filter)
    return [to_hits(rows) for rows in results]
