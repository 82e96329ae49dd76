"""Query: example images → vectors (one batch) → hits with scores and metadata (one search call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

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


def search_until(
    store: Store, vectors: list[list[float]], k: int, select: Callable[[int, list[dict]], list[dict]], filter: str | None = None
) -> list[list[dict]]:
    """Per query, ``select(query_index, candidates)``: fetch ``8k`` candidates, then more for the
    queries whose full page gave fewer than ``k`` selected rows, up to the search limit."""
    limit = min(MAX_K, k * _GROUP_FETCH)
    results: list[list[dict]] = [[] for _ in vectors]
    todo = list(range(len(vectors)))
    while todo:
        found = store.search([vectors[i] for i in todo], limit, filter=filter)
        again = []
        for i, rows in zip(todo, found):
            results[i] = select(i, rows)
            if len(results[i]) < k and len(rows) == limit and limit < MAX_K:
                again.append(i)
        todo, limit = again, min(MAX_K, limit * 4)
    return results


def grouped_search(store: Store, vectors: list[list[float]], k: int, field: str, filter: str | None = None) -> list[list[dict]]:
    """Top-``k`` distinct values of ``field`` per query, each with its best row.

    Done on the client, so it works for metadata fields on Milvus Lite and every server version.
    """
    check_field(field, "--group-by")
    return search_until(store, vectors, k, lambda _, rows: best_per_group(rows, field, k), filter)


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
