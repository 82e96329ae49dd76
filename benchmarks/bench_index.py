"""End-to-end index throughput: `vitsearch index` against the naive per-image pipeline, one run.

    python benchmarks/bench_index.py [--small 40] [--large 40] [--workers N] [--out benchmarks/out]

Both index the same images with the same (bundled) model into a fresh Milvus Lite store, each as a
fresh process (both pay the same imports and model load). The naive
pipeline is what most demos do: per image, transformers' image processor, one model call, one insert.
Images: small PNGs (sample_images: emoji, Fashion-MNIST, photos) and 12-megapixel JPEGs made from
the sample photos. Then where the time goes: model-only images/s (fp32, bf16), and each other stage
alone on one core (hashing, vitsearch's draft decode + resize, the naive image processor, store
upserts). Prints the results, writes OUT/results.json and a results file (benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import results
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def make_images(folder: Path, small: int, large: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pngs = sorted((ROOT / "sample_images").rglob("*.png"))
    photos = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))
    out = []
    for i in range(small):
        src = pngs[i % len(pngs)]
        dst = folder / f"small_{i:04d}.png"
        if not dst.exists():
            img = Image.open(src).convert("RGB")
            arr = np.asarray(img).copy()
            arr[0, 0] = [i % 256, i // 256 % 256, 7]  # distinct content, so no vector is reused
            Image.fromarray(arr).save(dst)
        out.append(dst)
    rng = np.random.default_rng(0)
    for i in range(large):
        dst = folder / f"large_{i:04d}.jpg"
        if not dst.exists():
            img = Image.open(photos[i % len(photos)]).convert("RGB").resize((4000, 3000), Image.BICUBIC)
            noise = rng.integers(-6, 7, (3000, 4000, 3), dtype=np.int16)
            arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(dst, quality=90)
        out.append(dst)
    return out


def naive(files: list[Path], db: str) -> None:
    import torch
    from pymilvus import MilvusClient
    from transformers import AutoImageProcessor, AutoModel

    from vitsearch.checkpoint import BUNDLED_DIR

    processor = AutoImageProcessor.from_pretrained(BUNDLED_DIR)
    model = AutoModel.from_pretrained(BUNDLED_DIR, dtype=torch.float32).eval()
    client = MilvusClient(db)
    client.create_collection("naive", dimension=384, metric_type="COSINE", auto_id=True)
    for path in files:
        img = Image.open(path).convert("RGB")
        pixels = processor(images=img, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            cls = model(pixel_values=pixels).last_hidden_state[:, 0]
        vec = torch.nn.functional.normalize(cls, dim=-1)[0].tolist()
        client.insert("naive", [{"vector": vec, "path": str(path)}])
    client.close()


def naive_cli(folder: Path, db: str) -> float:
    """The naive pipeline as its own process, so that it pays the same imports as `vitsearch index`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--naive-run", str(folder), db], check=True, capture_output=True)
    return time.perf_counter() - start


def vitsearch_cli(folder: Path, db: str, extra: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vitsearch", "index", str(folder), "--uri", db, "--json", *extra],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(done.stdout)


def model_only(n: int = 256) -> dict:
    from vitsearch import Encoder
    from vitsearch.device import cpu_supports_bf16

    out = {}
    # bf16 only where the CPU has it natively: elsewhere torch emulates it, several times slower than fp32
    for precision in ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",):
        enc = Encoder(device="cpu", precision=precision, num_workers=0)
        h, w = enc.spec.preprocessing.input_size  # the model's own input size
        batch = np.random.default_rng(0).integers(0, 256, (32, 3, h, w), dtype=np.uint8)
        enc.embed_pixels(batch[:4])
        start = time.perf_counter()
        for _ in range(n // 32):
            enc.embed_pixels(batch)
        out[precision] = n / (time.perf_counter() - start)
    return out


def stages(files: list[Path]) -> dict:
    """Where the time goes: each stage alone, in this process on one core, in ms per image, for the
    small PNGs and the 12-MP JPEGs apart; and the store's upsert rate (+ the final flush)."""
    import tempfile

    from transformers import AutoImageProcessor

    from vitsearch.checkpoint import BUNDLED_DIR, load_spec
    from vitsearch.embed import _FileDataset
    from vitsearch.indexer import sha256_file
    from vitsearch.store import Store

    spec = load_spec(None)
    processor = AutoImageProcessor.from_pretrained(BUNDLED_DIR)
    out: dict = {}
    for kind in ("small", "large"):
        group = [str(f) for f in files if f.name.startswith(kind)]
        if not group:
            continue
        timings = {}
        start = time.perf_counter()
        for path in group:
            sha256_file(path)
        timings["sha256"] = time.perf_counter() - start
        dataset = _FileDataset(group, spec.preprocessing)
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        timings["vitsearch_decode_resize"] = time.perf_counter() - start
        start = time.perf_counter()
        for path in group:
            processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
        timings["naive_decode_processor"] = time.perf_counter() - start
        out[kind] = {k: round(v * 1000 / len(group), 2) for k, v in timings.items()}
    rng = np.random.default_rng(0)
    rows = [{"id": i, "path": f"/x/{i}.jpg", "size": 1, "mtime": 1.0, "sha256": f"{i:064x}", "width": 1,
             "height": 1, "vector": (v / np.linalg.norm(v)).tolist()} for i, v in enumerate(rng.standard_normal((2000, 384)))]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "s.db"), "stage")
        store.create({"model": "bench", "fingerprint": "x", "dim": 384})
        start = time.perf_counter()
        for i in range(0, len(rows), 256):
            store.upsert(rows[i : i + 256])
        store.flush()
        out["store_ms_per_row"] = round((time.perf_counter() - start) * 1000 / len(rows), 3)
        store.close()
    return out


def main() -> None:
    if sys.argv[1:2] == ["--naive-run"]:
        naive(sorted(Path(sys.argv[2]).iterdir()), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=40)
    parser.add_argument("--large", type=int, default=40)
    parser.add_argument("--workers", type=int, help="decode workers for vitsearch (default: its own choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    results.add_argument(parser)
    args = parser.parse_args()
    out = Path(args.out)
    subprocess.run(["rm", "-rf", str(out / "images")], check=True)
    files = make_images(out / "images", args.small, args.large)
    for db in ("naive.db", "vitsearch.db"):
        subprocess.run(["rm", "-rf", str(out / db)], check=True)
    extra = ["--workers", str(args.workers)] if args.workers is not None else []
    t_naive = naive_cli(out / "images", str(out / "naive.db"))
    t_vs, summary = vitsearch_cli(out / "images", str(out / "vitsearch.db"), extra)
    t_again, _ = vitsearch_cli(out / "images", str(out / "vitsearch.db"), extra)
    speeds = model_only()
    where = stages(files)
    result = {
        "images": len(files), "workers": args.workers, "small_png": args.small, "large_12mp_jpeg": args.large, "cpus": os.cpu_count(),
        "naive_seconds": round(t_naive, 2), "naive_images_per_s": round(len(files) / t_naive, 2),
        "vitsearch_seconds": round(t_vs, 2), "vitsearch_images_per_s": round(len(files) / t_vs, 2),
        "speedup": round(t_naive / t_vs, 2), "no_op_reindex_seconds": round(t_again, 2),
        "model_only_images_per_s": {k: round(v, 1) for k, v in speeds.items()},
        "cpu_bf16": "bf16" in speeds,
        "end_to_end_share_of_model_only": round(len(files) / t_vs / max(speeds.values()), 2),
        "vitsearch_summary": {k: summary[k] for k in ("added", "embedded", "seconds")},
        "stages_ms_per_image": where,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    results.write("bench_index", result, settings={"small": args.small, "large": args.large, "workers": args.workers},
                  folder=results.folder_arg(args.results_dir))


if __name__ == "__main__":
    main()
