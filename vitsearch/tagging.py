"""Label images from their nearest labelled neighbours: a similarity-weighted kNN vote.

Each of the ``k`` nearest indexed images that has the field votes for its value with weight
``exp(similarity / T)``, T = 0.07 (the weighting of DINO's kNN classifier): nearer neighbours count
for much more, so a large ``k`` does not drown the closest matches. The label is the value with
the most weight; its confidence is that weight over all the weight. Below ``min_confidence`` the
label is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError, check_count
from .metadata import check_field
from .search import Hit, check_min_score, search_until, to_hits
from .store import Store

TEMPERATURE = 0.07


@dataclass
class Tag:
    """A predicted ``label`` for ``query`` with its ``confidence`` (the winner's share of the
    similarity-weighted ``votes``), the ``neighbours`` that voted, and whether it was ``written``."""

    query: str
    label: Any  # None when no neighbour has the field, or the vote is below min_confidence
    confidence: float
    votes: dict = field(default_factory=dict)  # value -> summed weight
    neighbours: list[Hit] = field(default_factory=list)
    field_name: str = "label"
    written: bool = False  # the label was stored on the image's row

    def as_dict(self) -> dict:
        # votes as each value's share of the vote: the weights' own scale means nothing (shifted so
        # as not to overflow, they printed as 1e-05 or 0.0 beside a confidence of 0.85)
        total = sum(self.votes.values()) or 1.0
        return {
            "query": self.query,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "votes": {str(k): round(v / total, 6) for k, v in self.votes.items()},
            "written": self.written,
            "neighbours": [
                {"path": h.path, "score": round(h.score, 6), "label": h.metadata.get(self.field_name)} for h in self.neighbours
            ],
        }


def vote(neighbours: list[dict], field_name: str, min_confidence: float = 0.0) -> tuple[Any, float, dict]:
    """(label, confidence, votes) from neighbour rows carrying ``field_name``."""
    votes: dict = {}
    for row in neighbours:
        weight = math.exp((float(row["score"]) - 1.0) / TEMPERATURE)  # shifted by 1: no overflow, same ratios
        votes[row[field_name]] = votes.get(row[field_name], 0.0) + weight
    total = sum(votes.values())
    if not votes or total <= 0:
        return None, 0.0, votes
    label, weight = max(votes.items(), key=lambda item: item[1])
    confidence = weight / total
    return (label if confidence >= min_confidence else None), confidence, votes


def tag_vectors(
    store: Store,
    vectors: list[list[float]],
    names: list[str],
    *,
    field_name: str = "label",
    k: int = 15,
    min_confidence: float = 0.0,
    filter: str | None = None,
    exclude: list[set] | None = None,
    min_score: float | None = None,
) -> list[Tag]:
    """Tag each vector from its ``k`` nearest rows that have ``field_name`` (rows in ``exclude[i]``
    skipped, and rows that score below ``min_score``)."""
    check_field(field_name, "--field")
    min_score = check_min_score(min_score)
    if not 0.0 <= min_confidence <= 1.0:
        raise UsageError(f"min_confidence must be between 0 and 1, not {min_confidence}")
    k = check_count(k, "k")
    skip = exclude or [set() for _ in vectors]

    def labelled(i: int, rows: list[dict]) -> list[dict]:
        keep = [r for r in rows if r.get(field_name) is not None and r["id"] not in skip[i] and r.get("path") not in skip[i]]
        return keep[:k]

    tags = []
    for i, rows in enumerate(search_until(store, vectors, k, labelled, filter, min_score)):
        label, confidence, votes = vote(rows, field_name, min_confidence)
        tags.append(Tag(names[i], label, confidence, votes, to_hits(rows), field_name))
    return tags
