"""Retrieval metrics of an encoder on a labelled set, and near-duplicate recall.

Leave-one-out: every image queries all the others by exact cosine similarity (no ANN index, so the
figures measure the encoder alone). For a query whose class has R other members:

* P@1 — the nearest other image has its class;
* P@k — the share of the k nearest that have its class;
* R@k — at least one of the k nearest has its class (the "recall@k" of the metric-learning papers);
* mAP@R — mean over i ≤ R of precision@i at the ranks i that hold a same-class image, divided by R
  (Musgrave et al., "A Metric Learning Reality Check", 2020).

Queries alone in their class (R = 0) are left out and counted.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .data import ImageSet, read_images
from .errors import UsageError, VitsearchError, check_count
from .images import Failure, load_image, quiet_pil
from .progress import Callback, emit

if TYPE_CHECKING:
    from .embed import Encoder


def _chunk_rows(width: int) -> int:
    """Query rows per similarity block: about 128 MB of float32 scores at a time."""
    return max(1, min(1024, (1 << 25) // max(1, width)))


def retrieval_metrics(embeddings: np.ndarray, labels, k: int = 10, per_query: bool = False) -> dict:
    """P@1, P@k, R@k and mAP@R of leave-one-out retrieval (rows of ``embeddings`` L2-normalised).

    ``per_query`` adds ``per_query_precision_at_k``: each query's P@k (the queries are the images
    with a classmate, in row order), for paired comparisons of two encoders on the same images."""
    import torch

    k = check_count(k, "k")
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"{n} embeddings but {y.shape[0]} labels")
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    others = counts[inverse] - 1  # R of each query
    totals = {"p1": 0.0, "pk": 0.0, "rk": 0.0, "map": 0.0}
    queries, each_pk = 0, []
    step = _chunk_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = torch.arange(start, stop)
        r = others[rows]
        keep = r > 0
        if not keep.any():
            continue
        rows, r = rows[keep], r[keep]
        sims = x[rows] @ x.T
        sims[torch.arange(len(rows)), rows] = -float("inf")  # never find itself
        depth = min(n - 1, max(k, int(r.max())))
        order = sims.topk(depth, dim=1).indices
        rel = (y[order] == y[rows][:, None]).float()
        kk = min(k, depth)
        totals["p1"] += rel[:, 0].sum().item()
        hits = rel[:, :kk].sum(1)
        pk = hits / k
        totals["pk"] += pk.sum().item()
        each_pk.append(pk)
        totals["rk"] += (hits > 0).float().sum().item()
        ranks = torch.arange(1, depth + 1, dtype=torch.float32)
        within = (ranks[None, :] <= r[:, None]).float()
        precision = rel.cumsum(1) / ranks
        totals["map"] += ((precision * rel * within).sum(1) / r.float()).sum().item()
        queries += len(rows)
    if not queries:
        raise VitsearchError("no image has another of its class to find: each class needs at least two images")
    return {
        "n": int(n),
        "k": int(k),
        "queries": queries,
        "precision_at_1": totals["p1"] / queries,
        "precision_at_k": totals["pk"] / queries,
        "recall_at_k": totals["rk"] / queries,
        "map_at_r": totals["map"] / queries,
        **({"per_query_precision_at_k": torch.cat(each_pk).numpy()} if per_query else {}),
    }


def near_dup_recall(embeddings: np.ndarray, source: np.ndarray, is_copy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each copy: is its nearest neighbour its original? Two answers from one similarity pass.

    ``source[i]`` is the index of the original that row ``i`` was made from (itself for originals).
    Returns two bool arrays with one entry per copy, in row order: with every other row as a
    candidate except the copy's own siblings (other copies compete), and with only the originals as
    candidates (the classic copy-detection setup: the copies are queries, not part of the collection).
    """
    import torch

    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    src = torch.as_tensor(np.asarray(source, dtype=np.int64))
    copy = torch.as_tensor(np.asarray(is_copy, dtype=bool))
    queries = torch.nonzero(copy).flatten()
    originals = torch.nonzero(~copy).flatten()
    mixed, alone = [], []
    step = _chunk_rows(x.shape[0])
    for start in range(0, len(queries), step):
        rows = queries[start : start + step]
        sims = x[rows] @ x.T
        alone.append(src[originals][sims[:, originals].argmax(1)] == src[rows])
        sims[(src[None, :] == src[rows][:, None]) & copy[None, :]] = -float("inf")  # its siblings
        mixed.append(sims.argmax(1) == src[rows])
    if not mixed:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    return torch.cat(mixed).numpy(), torch.cat(alone).numpy()


@dataclass
class EvalReport:
    model: str
    n: int = 0
    k: int = 10
    classes: int = 0
    metrics: dict = field(default_factory=dict)
    near_dup: dict | None = None
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        out = {"model": self.model, "n": self.n, "k": self.k, "classes": self.classes}
        out.update({key: value for key, value in self.metrics.items() if key not in ("n", "k")})
        if self.near_dup is not None:
            out["near_dup_recall_at_1"] = self.near_dup["recall_at_1"]
            out["near_dup"] = self.near_dup
        out["failed"] = [f.as_dict() for f in self.failed]
        out["seconds"] = round(self.seconds, 3)
        return out


def sample(data: ImageSet, limit: int | None, seed: int = 0) -> ImageSet:
    """``limit`` images (all of them when there are fewer), the same share of each class, chosen reproducibly."""
    if limit is None or limit >= len(data):
        return data
    if limit < 2:
        raise UsageError(f"limit must be at least 2, not {limit}")
    rng = random.Random(seed)
    order = list(range(len(data)))
    rng.shuffle(order)
    if not data.labelled:
        return data.subset(sorted(order[:limit]))
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(data.labels[i], []).append(i)
    # each class its share, rounded down, at least two (a query needs a classmate); the images left over
    # go one each to the classes whose share lost most in the rounding, so that there are exactly ``limit``
    share = {label: len(members) * limit / len(data) for label, members in by_class.items()}
    take = {label: min(len(by_class[label]), max(2, math.floor(share[label]))) for label in by_class}
    while sum(take.values()) < limit:
        label = max((c for c in by_class if take[c] < len(by_class[c])), key=lambda c: share[c] - take[c])
        take[label] += 1
    chosen = [i for label, members in by_class.items() for i in members[: take[label]]]
    rng.shuffle(chosen)
    return data.subset(sorted(chosen[:limit]))  # more than limit only when two a class do not fit


def embed_set(encoder: Encoder, paths: list[str], progress: Callback | None = None) -> tuple[np.ndarray, list[int], list[Failure]]:
    """Embeddings of the readable files, their indices in ``paths``, and the failures."""
    vectors, kept, failed = [], [], []
    for result in encoder.encode_files(paths):
        if result.vector is None:
            failed.append(Failure(result.path, result.error or "cannot read"))
        else:
            vectors.append(result.vector)
            kept.append(result.index)
        emit(progress, "embed", done=len(kept) + len(failed), total=len(paths))
    matrix = np.stack(vectors) if vectors else np.zeros((0, encoder.dim), dtype=np.float32)
    return matrix, kept, failed


def near_dup_report(encoder: Encoder, paths: list[str], vectors: np.ndarray, seed: int = 0, progress: Callback | None = None) -> dict:
    """Recall@1 of each original from one copy per edit (crop, rotate, JPEG, jitter, grayscale, downscale).

    ``recall_at_1``: the copies are mixed into the set, so a copy must find its original before the
    other originals' copies (same-edit copies of different images compete). ``recall_at_1_originals_only``:
    only the originals are candidates."""
    from .augment import NEAR_DUP_EDITS

    rng = random.Random(seed)
    edits = list(NEAR_DUP_EDITS)
    copies, source, kinds = [], [], []
    batch: list = []
    for i, path in enumerate(paths):
        try:
            img = load_image(path)
        except Exception:  # noqa: BLE001, S112 - it was embedded a moment ago; a vanished file is skipped
            continue
        with quiet_pil():  # the edits of a large picture make large pictures: PIL warns, as it did at load
            for name in edits:
                batch.append(NEAR_DUP_EDITS[name](img, rng))
                source.append(i)
                kinds.append(name)
        if len(batch) >= encoder.batch_size * 4:
            copies.append(encoder.encode(batch))
            batch = []
            emit(progress, "near_dup", done=i + 1, total=len(paths))
    if batch:
        copies.append(encoder.encode(batch))
    emit(progress, "near_dup", done=len(paths), total=len(paths))
    if not copies:
        raise VitsearchError("no image could be copied for the near-duplicate test")
    everything = np.concatenate([vectors, *copies])
    src = np.concatenate([np.arange(len(vectors)), np.asarray(source)])
    is_copy = np.concatenate([np.zeros(len(vectors), bool), np.ones(len(source), bool)])
    hits, alone = near_dup_recall(everything, src, is_copy)
    kinds_arr = np.asarray(kinds)
    return {
        "recall_at_1": float(hits.mean()),
        "copies": len(hits),
        "originals": len(vectors),
        "by_edit": {name: float(hits[kinds_arr == name].mean()) for name in edits},
        # the copies as queries only: a copy then misses only where another original is nearer
        "recall_at_1_originals_only": float(alone.mean()),
        "by_edit_originals_only": {name: float(alone[kinds_arr == name].mean()) for name in edits},
    }


def evaluate(
    data: str | ImageSet,
    *,
    model: str | Encoder | None = None,
    k: int = 10,
    near_dup: bool = False,
    limit: int | None = None,
    seed: int = 0,
    device: str | None = "auto",
    precision: str | None = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: Callback | None = None,
) -> EvalReport:
    """Measure how well ``model`` (a hub id, directory, an :class:`Encoder`, or the bundled model) retrieves.

    ``data`` is a labelled set (class folders or a CSV manifest) for P@1/P@k/R@k/mAP@R, or any set of
    images with ``near_dup=True``. ``limit`` evaluates a reproducible, class-balanced sample.
    ``progress`` is called with :class:`~vitsearch.progress.Progress` counts (``embed``, ``near_dup``).
    """
    from .embed import Encoder

    k = check_count(k, "k")
    limit = None if limit is None else check_count(limit, "limit", 2)
    batch_size = None if batch_size is None else check_count(batch_size, "batch_size")
    num_workers = None if num_workers is None else check_count(num_workers, "num_workers", 0)
    seed = check_count(seed, "seed", low=-(2**63))
    started = time.perf_counter()
    images = data if isinstance(data, ImageSet) else read_images(data)
    if not images.labelled and not near_dup:
        raise VitsearchError(
            f"{images.source} has no labels (one folder per class, or a CSV with a 'label' column); "
            "use --near-dup to measure near-duplicate recall on unlabelled images"
        )
    unreadable = list(images.failed)
    images = sample(images, limit, seed)
    encoder = model if isinstance(model, Encoder) else Encoder(
        model, device=device, precision=precision, batch_size=batch_size, num_workers=num_workers
    )
    vectors, kept, failed = embed_set(encoder, images.paths, progress)
    report = EvalReport(encoder.spec.name, n=len(kept), k=k, classes=len(images.classes), failed=unreadable + failed)
    if images.labelled:
        report.metrics = retrieval_metrics(vectors, [images.labels[i] for i in kept], k)
    if near_dup:
        paths = [images.paths[i] for i in kept]
        if images.loose and limit is None:  # any image serves a near-duplicate test, classed or not
            more, found, failed = embed_set(encoder, images.loose, progress)
            paths, vectors = paths + [images.loose[i] for i in found], np.concatenate([vectors, more])
            report.failed += failed
        report.near_dup = near_dup_report(encoder, paths, vectors, seed, progress)
    report.seconds = time.perf_counter() - started
    return report
