"""Groups of duplicate and near-duplicate images across a collection.

Exact duplicates (same sha256) are joined first; then every image searches its nearest neighbours
in batches, and pairs at or above the similarity threshold are joined (union-find). Only ids and
file facts are held for the whole collection; vectors are read one batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError
from .store import EXIF_FIELDS, MAX_K, Store

NEIGHBOURS = 32  # candidates per image; a group larger than this is still found through its members


@dataclass
class DupGroup:
    """Images that are copies of each other: their ``paths``, the one to ``keep`` (most pixels, then
    largest file), the least ``similarity`` within the group, and whether all are ``exact`` copies."""

    paths: list[str]
    keep: str
    similarity: float  # the least cosine similarity between two members
    exact: bool = False  # every member has the same content
    ids: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {"paths": self.paths, "keep": self.keep, "similarity": round(self.similarity, 6), "exact": self.exact}


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def keeper(rows: list[dict]) -> dict:
    """The copy to keep: the most pixels; among equals, the earliest ``taken_at`` (the original, not a
    later export; a copy without one counts as taken last), then the most EXIF fields (immich's rule),
    then the largest file, then the shortest path."""

    def rank(r: dict):
        taken = r.get("taken_at")
        taken = taken if isinstance(taken, (int, float)) and not isinstance(taken, bool) else float("inf")
        exif = sum(r.get(name) is not None for name in EXIF_FIELDS)
        return (r["width"] * r["height"], -taken, exif, r["size"], -len(r["path"]), r["path"])

    return max(rows, key=rank)


def find_duplicates(store: Store, threshold: float = 0.95, *, batch_size: int = 1024, neighbours: int = NEIGHBOURS) -> list[DupGroup]:
    """Duplicate groups of the collection, largest first; ``threshold`` is a cosine similarity."""
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"threshold must be in (0, 1], not {threshold}")
    facts: dict[int, dict] = {}
    for row in store.iter_rows("", ["id", "path", "sha256", "width", "height", "size", *EXIF_FIELDS]):
        facts[row["id"]] = row
    groups = _UnionFind()
    by_hash: dict[str, int] = {}
    for id_, row in facts.items():
        first = by_hash.setdefault(row["sha256"], id_)
        if first != id_:
            groups.union(first, id_)
    ids = sorted(facts)
    k = min(MAX_K, neighbours + 1)
    for start in range(0, len(ids), batch_size):
        rows = store.get(ids[start : start + batch_size], ["id", "vector"])
        found = store.search([r["vector"] for r in rows], k, output_fields=["id"])
        for row, hits in zip(rows, found):
            for hit in hits:
                if hit["score"] < threshold:
                    break
                if hit["id"] != row["id"] and hit["id"] in facts:
                    groups.union(row["id"], hit["id"])
    members: dict[int, list[int]] = {}
    for id_ in list(groups.parent):
        members.setdefault(groups.find(id_), []).append(id_)
    out = []
    for group in members.values():
        if len(group) < 2:
            continue
        rows = sorted((facts[i] for i in group), key=lambda r: r["path"])
        exact = len({r["sha256"] for r in rows}) == 1
        out.append(DupGroup([r["path"] for r in rows], keeper(rows)["path"], 1.0 if exact else _least_similarity(store, group), exact, sorted(group)))
    out.sort(key=lambda g: (-len(g.paths), g.paths[0]))
    return out


def _least_similarity(store: Store, ids: list[int]) -> float:
    vectors = np.asarray([r["vector"] for r in store.get(sorted(ids), ["id", "vector"])], dtype=np.float32)
    sims = vectors @ vectors.T
    return float(sims.min())
