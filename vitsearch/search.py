"""Query: example images → vectors (one batch) → hits with scores and metadata (one search call)."""

from __future__ import annotations

import hashlib
import numbers
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ImageError, UsageError
from .filters import PhotoFilter
from .images import FileEntry, ImageInput, check_file
from .indexer import sha256_file
from .metadata import check_field
from .store import HIDDEN_FIELDS, MAX_K, Store, path_id

if TYPE_CHECKING:
    from .embed import Encoder


@dataclass
class Hit:
    """One search result: its ``rank`` (1 first), ``score`` (cosine similarity, higher is closer), the
    image's ``path`` and row ``id``, and ``metadata`` (size, mtime, sha256, width, height and the user's
    fields). ``hit["width"]`` reads any of them; :meth:`as_dict` is what ``query --json`` prints."""

    rank: int
    score: float  # cosine similarity, higher is closer
    path: str
    id: int
    metadata: dict[str, Any] = field(default_factory=dict)  # size, mtime, sha256, width, height, EXIF, user fields

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": round(self.score, 6), "path": self.path, "id": self.id, **self.metadata}

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]


def to_hits(rows: list[dict]) -> list[Hit]:
    hits = []
    for rank, row in enumerate(rows, start=1):
        row = {k: v for k, v in row.items() if k not in HIDDEN_FIELDS and v is not None}
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


def check_min_score(min_score: float | None) -> float | None:
    """``min_score`` as a float, or None (no floor); a :class:`UsageError` outside [-1, 1]."""
    if min_score is None:
        return None
    if isinstance(min_score, bool) or not isinstance(min_score, numbers.Real) or not -1.0 <= min_score <= 1.0:
        raise UsageError(f"min_score must be a cosine similarity between -1 and 1, not {min_score!r}")
    return float(min_score)


def above(rows: list[dict], min_score: float | None) -> list[dict]:
    """The rows (best first) whose score reaches ``min_score``; all of them when it is None."""
    if min_score is None:
        return rows
    return [r for r in rows if r["score"] >= min_score]


def search_until(
    store: Store, vectors: list[list[float]], k: int, select: Callable[[int, list[dict]], list[dict]],
    filter: str | None = None, min_score: float | None = None,
) -> list[list[dict]]:
    """Per query, ``select(query_index, candidates)``: fetch ``8k`` candidates, then more for the
    queries whose full page gave fewer than ``k`` selected rows, up to the search limit.

    ``min_score``: only candidates that score at least this are offered to ``select``, and a query
    whose page already ends below it is not searched deeper (no row further down can reach it)."""
    limit = min(MAX_K, k * _GROUP_FETCH)
    results: list[list[dict]] = [[] for _ in vectors]
    todo = list(range(len(vectors)))
    while todo:
        found = store.search([vectors[i] for i in todo], limit, filter=filter)
        again = []
        for i, rows in zip(todo, found):
            results[i] = select(i, above(rows, min_score))
            deeper = len(rows) == limit and limit < MAX_K and (min_score is None or rows[-1]["score"] >= min_score)
            if len(results[i]) < k and deeper:
                again.append(i)
        todo, limit = again, min(MAX_K, limit * 4)
    return results


def grouped_search(store: Store, vectors: list[list[float]], k: int, field: str, filter: str | None = None,
                   photo: PhotoFilter | None = None, min_score: float | None = None) -> list[list[dict]]:
    """Top-``k`` distinct values of ``field`` per query, each with its best row.

    Done on the client, so it works for metadata fields on Milvus Lite and every server version.
    """
    check_field(field, "--group-by")
    keep = photo.accepts if photo else None
    return search_until(store, vectors, k, lambda _, rows: best_per_group([r for r in rows if not keep or keep(r)], field, k),
                        filter, min_score)


def filtered_search(store: Store, vectors: list[list[float]], k: int, photo: PhotoFilter | None = None,
                    filter: str | None = None, group_by: str | None = None,
                    min_score: float | None = None) -> list[list[dict]]:
    """The search of ``vectors`` under ``filter`` and ``photo`` (see :mod:`vitsearch.filters`), which the
    caller has combined into ``filter``: the rows ``photo`` must still check are dropped, and more are
    fetched until ``k`` remain (or the collection has no more, or none left scores ``min_score``)."""
    if group_by:
        return grouped_search(store, vectors, k, group_by, filter, photo, min_score)
    if photo is None or photo.exact:
        return [above(rows, min_score) for rows in store.search(vectors, k, filter=filter)]
    return search_until(store, vectors, k, lambda _, rows: [r for r in rows if photo.accepts(r)][:k], filter, min_score)


def stored_vectors(store: Store, images: Sequence[ImageInput]) -> dict[int, list[float]]:
    """The vectors the collection already holds for query images, by position in ``images``.

    A query given as a path is looked up the way the indexer judges a file: its own row, if its size
    and mtime still match, else any row with its content hash (a copy of an indexed file); a query
    given as bytes, by their hash. Such a row's vector is what the model would give for the file, so
    the query needs no model at all.
    """
    files: dict[int, str] = {}
    hashes: dict[int, str] = {}
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            files[i] = os.path.abspath(os.fspath(item))
        elif isinstance(item, (bytes, bytearray, memoryview)):
            hashes[i] = hashlib.sha256(item).hexdigest()
    rows = {}
    if files:
        rows = {row["path"]: row for row in store.get(sorted({path_id(p) for p in files.values()}),
                                                      ["id", "path", "size", "mtime", "vector"])}
    found: dict[int, list[float]] = {}
    for i, path in files.items():
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                continue  # the encoder says what is wrong with it
            row = rows.get(path)
            if row is not None and FileEntry(path, st.st_size, st.st_mtime).matches(row):
                found[i] = row["vector"]
            else:
                check_file(path)  # a large file that is no image is not read whole (the encoder says why not)
                hashes[i] = sha256_file(path)
        except (OSError, ImageError):
            continue
    if hashes:
        known = store.by_sha256(hashes.values(), ["id", "sha256", "vector"])
        found.update({i: known[sha]["vector"] for i, sha in hashes.items() if sha in known})
    return {i: np.asarray(v, dtype=np.float32).tolist() for i, v in found.items()}


def query_vectors(store: Store, images: Sequence[ImageInput], encoder: Callable[[], Encoder]) -> list[list[float]]:
    """One vector per query image: stored ones where the collection has them (see
    :func:`stored_vectors`), the rest embedded in one call; ``encoder()`` is only called then."""
    vectors = stored_vectors(store, images)
    rest = [i for i in range(len(images)) if i not in vectors]
    if rest:
        for i, vector in zip(rest, encoder().encode([images[i] for i in rest])):
            vectors[i] = vector.tolist()
    return [vectors[i] for i in range(len(images))]


def search_images(
    encoder: Callable[[], Encoder],
    store: Store,
    images: Sequence[ImageInput],
    *,
    k: int = 10,
    filter: str | None = None,
    group_by: str | None = None,
    photo: PhotoFilter | None = None,
    min_score: float | None = None,
) -> list[list[Hit]]:
    """The ``k`` nearest indexed images of each query image (or the best image of ``k`` groups), among
    those that match ``filter`` and ``photo`` (when, where, which camera; :mod:`vitsearch.filters`)
    and score at least ``min_score`` (fewer than ``k``, or none, when too few are that close).

    ``encoder()`` gives the model; it is not called when every query is an indexed file."""
    min_score = check_min_score(min_score)
    if not images:
        return []
    photo = photo or None
    if photo is not None:
        filter = photo.combine(filter)
    vectors = query_vectors(store, list(images), encoder)
    results = filtered_search(store, vectors, k, photo, filter, group_by, min_score)
    return [to_hits(rows) for rows in results]
