"""Query: example images → vectors (one batch) → hits with scores and metadata (one search call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from .images import ImageInput
from .metadata import check_field
from .store import MAX_K, Store

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


_GROUP_FETCH = 8  # candidates fetched per wanted group, at first


def best_per_group(rows: list[dict], field: str, k: int) -> list[dict]:
    """The first (best) row of each value of ``field``, at most ``k``; rows without the field stand alone."""
    seen: set = set()
    out = []
    for row in rows:
        key = ("value", repr(row[field])) if row.get(field) is not None else ("row", row["id"])
        if key not in seen:
            seen.add(key)
            out.append(row)
            if len(out) == k:
                break
    return out


def grouped_search(store: Store, vectors: list[list[float]], k: int, field: str, filter: str | None = None) -> list[list[dict]]:
    """Top-``k`` distinct values of ``field`` per query, each with its best row.

    Done on the client, so it works for metadata fields on Milvus Lite and every server version:
    fetch ``8k`` candidates, and fetch more for the queries that found fewer than ``k`` groups in a
    full page, up to the search limit.
    """
    check_field(field, "--group-by")
    limit = min(MAX_K, k * _GROUP_FETCH)
    results: list[list[dict] | None] = [None] * len(vectors)
    todo = list(range(len(vectors)))
    while todo:
        found = store.search([vectors[i] for i in todo], limit, filter=filter)
        again = []
        for i, rows in zip(todo, found):
            groups = best_per_group(rows, field, k)
            if len(groups) < k and len(rows) == limit and limit < MAX_K:
                again.append(i)
            results[i] = groups
        todo, limit = again, min(MAX_K, limit * 4)
    return [r or [] for r in results]


def search_images(
    encoder: "Encoder",
    store: Store,
    images: Sequence[ImageInput],
    *,
    k: int = 10,
    filter: str | None = None,
    group_by: str | None = None,
) -> list[list[Hit]]:
    """The ``k`` nearest indexed images of each query image (or the best image of ``k`` groups)."""
    if not images:
        return []
    vectors = encoder.encode(list(images)).tolist()
    if group_by:
        results = grouped_search(store, vectors, k, group_by, filter)
    else:
        results = store.search(vectors, k, filter=filter)
    return [to_hits(rows) for rows in results]
