"""Indexing from URLs against indexing the same images from local disk, and an unchanged re-run.

    python benchmarks/bench_sources.py [--images 500] [--latency 0.05] [--concurrency 32] [--per-host 16]

The images are small PNGs made from sample_images (each made distinct, so no vector is reused). A
local HTTP server on 127.0.0.1 (tests/imagehost.py, in a thread of this process) serves them with an
ETag and Last-Modified, adding ``--latency`` seconds to every request as a CDN far away would. In one
process, with the bundled model loaded once beforehand (so neither side pays for it):

1. baseline: ``VisualSearch.index(folder)`` into a fresh Milvus Lite store;
2. the same images as a CSV feed of URLs into another fresh store;
3. the feed again, unchanged: every image is asked "changed?" (a conditional request, 304) and
   none is downloaded or embedded.

Figures: images/s of 1 and 2 and their ratio (target >= 0.8), and 3's time as a share of 2's
(target <= 0.1). Prints them and writes benchmarks/results/bench_sources-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pngs = sorted((ROOT / "sample_images").rglob("*.png"))
    out = []
    for i in range(n):
        arr = np.asarray(Image.open(pngs[i % len(pngs)]).convert("RGB")).copy()
        arr[0, 0] = [i % 256, i // 256 % 256, 7]  # distinct content, so no vector is reused
        path = folder / f"img_{i:04d}.png"
        Image.fromarray(arr).save(path)
        out.append(path)
    return out


def machine() -> dict:
    import torch

    import vitsearch

    cpu, cores, flags = platform.processor() or "unknown", os.cpu_count(), set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": cores, "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}), "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__, "vitsearch": vitsearch.__version__}


def write_results(figures: dict) -> Path:
    now = datetime.datetime.now(datetime.timezone.utc)
    out = ROOT / "benchmarks" / "results" / f"bench_sources-{now:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "bench_sources", "date": now.isoformat(timespec="seconds"),
                               "machine": machine(), "figures": figures}, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-host", type=int, default=16)
    args = parser.parse_args()

    from imagehost import ImageHost

    from vitsearch import VisualSearch
    from vitsearch.fetch import FetchOptions

    work = Path(tempfile.mkdtemp(prefix="bench_sources-"))
    files = make_images(work / "images", args.images)
    options = FetchOptions(concurrency=args.concurrency, per_host=args.per_host)
    warm = VisualSearch(str(work / "warm.db"), device="cpu")
    warm.encoder.encode([Image.open(files[0]).convert("RGB")])  # load the model once, outside the timings
    encoder = warm.encoder

    def fresh(name: str) -> VisualSearch:
        vs = VisualSearch(str(work / f"{name}.db"), device="cpu", fetch=options)
        vs._encoder = encoder
        return vs

    with ImageHost(latency=args.latency) as host:
        feed = work / "feed.csv"
        with open(feed, "w") as fh:
            fh.write("sku,image\n")
            for i, path in enumerate(files):
                fh.write(f"{i:05d},{host.image('/' + path.name, path.read_bytes())}\n")

        with fresh("local") as vs:
            local = vs.index(work / "images")
        with fresh("urls") as vs:
            host.reset_counts()
            first = vs.index(feed, image_column="image", id_column="sku")
            first_bodies, peak = sum(host.bodies.values()), host.max_active
            host.reset_counts()
            again = vs.index(feed, image_column="image", id_column="sku")
            again_requests, again_bodies = sum(host.requests.values()), sum(host.bodies.values())

    assert local.added == first.added == args.images and not first.failed, (local.as_dict(), first.as_dict())
    assert again.unchanged == args.images and again.fetched == 0
    figures = {
        "images": args.images,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "per_host": args.per_host,
        "local_seconds": round(local.seconds, 3),
        "local_images_per_s": round(args.images / local.seconds, 1),
        "urls_seconds": round(first.seconds, 3),
        "urls_images_per_s": round(args.images / first.seconds, 1),
        "urls_vs_local_throughput": round(local.seconds / first.seconds, 3),
        "urls_downloads": first_bodies,
        "urls_peak_concurrent_requests": peak,
        "rerun_seconds": round(again.seconds, 3),
        "rerun_vs_first_run_time": round(again.seconds / first.seconds, 3),
        "rerun_requests": again_requests,
        "rerun_downloads": again_bodies,
    }
    out = write_results(figures)
    print(f"machine: {machine()['cpu']}, {os.cpu_count()} cores")
    print(f"local disk: {args.images} images in {local.seconds:.2f} s ({figures['local_images_per_s']} img/s)")
    print(f"URLs (+{args.latency * 1000:.0f} ms a request): {first.seconds:.2f} s ({figures['urls_images_per_s']} img/s), "
          f"{figures['urls_vs_local_throughput']:.2f}x local throughput (target >= 0.8)")
    print(f"unchanged re-run: {again.seconds:.2f} s, {figures['rerun_vs_first_run_time']:.3f} of the first run "
          f"(target <= 0.1); {again_requests} requests, {again_bodies} downloads")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
