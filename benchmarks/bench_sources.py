"""Indexing from URLs against indexing the same images from local disk, and an unchanged re-run.

    python benchmarks/bench_sources.py [--images 500] [--rounds 5] [--latency 0.05] [--concurrency 32]

The images are small PNGs made from sample_images (each made distinct, so no vector is reused). A
local HTTP server on 127.0.0.1 (tests/imagehost.py, in a process of its own, as a CDN is another
machine) serves them with an ETag and Last-Modified, adding ``--latency`` seconds to every request.
In one process, with the bundled model loaded once beforehand (so neither side pays for it), the
images arrive in ``--rounds`` slices, and each round indexes the grown set both ways, in alternating
order, so that a shared machine's changing load falls on both sides alike:

1. baseline: ``VisualSearch.index(folder)`` (the folder holds the slices so far; the earlier ones
   are unchanged files, skipped by their size and mtime);
2. the same images as a CSV feed of URLs (the earlier ones are asked "changed?" and answer 304).

Throughput is all images over the summed seconds of each side (target: URLs >= 0.8 of local). Then
3. the whole feed again, unchanged: every image is asked "changed?" and none is downloaded or
   embedded (target: <= 0.1 of the time the URLs took to index).

Prints the figures and writes benchmarks/results/bench_sources-<date>.json (through benchmarks/results.py;
``--results-dir ''`` for a trial run that writes none).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import results


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


class Host:
    """tests/imagehost.py serving a folder, in its own process."""

    def __init__(self, folder: Path, latency: float):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "imagehost.py"), str(folder), str(latency)],
                                     stdout=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def stats(self, reset: bool = False) -> dict:
        with urllib.request.urlopen(self.base + "/_stats") as r:
            out = json.loads(r.read())
        if reset:
            urllib.request.urlopen(self.base + "/_reset").close()
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="slices, each indexed both ways in turn")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-host", type=int, default=16)
    results.add_argument(parser)
    args = parser.parse_args()

    from vitsearch import VisualSearch
    from vitsearch.fetch import FetchOptions

    work = Path(tempfile.mkdtemp(prefix="bench_sources-"))
    files = make_images(work / "all", args.images)
    options = FetchOptions(concurrency=args.concurrency, per_host=args.per_host)
    warm = VisualSearch(str(work / "warm.db"), device="cpu")
    warm.encoder.encode([Image.open(files[0]).convert("RGB")])  # load the model once, outside the timings
    encoder = warm.encoder

    def opened(name: str) -> VisualSearch:
        return VisualSearch(str(work / f"{name}.db"), fetch=options, encoder=encoder)

    host = Host(work / "all", args.latency)
    local_dir, feed = work / "local", work / "feed.csv"
    local_dir.mkdir()
    local_s = urls_s = 0.0
    downloads = peak = 0
    rounds = []
    try:
        with opened("local") as local_vs, opened("urls") as url_vs:
            for r in range(args.rounds):
                upto = len(files) * (r + 1) // args.rounds
                for path in files[len(files) * r // args.rounds : upto]:
                    shutil.copy2(path, local_dir / path.name)
                feed.write_text("sku,image\n" + "".join(f"{i:05d},{host.base}/{p.name}\n" for i, p in enumerate(files[:upto])))
                sides = [("local", lambda: local_vs.index(local_dir)),
                         ("urls", lambda: url_vs.index(feed, image_column="image", id_column="sku"))]
                took = {}
                for name, run in (sides if r % 2 == 0 else sides[::-1]):
                    summary = run()
                    assert not summary.failed and summary.added == upto - len(files) * r // args.rounds, summary.as_dict()
                    took[name] = summary.seconds
                local_s += took["local"]
                urls_s += took["urls"]
                stats = host.stats(reset=True)
                downloads, peak = downloads + stats["bodies"], max(peak, stats["max_active"])
                rounds.append({"images": upto, "local_s": round(took["local"], 2), "urls_s": round(took["urls"], 2)})
                print(f"round {r + 1}: {upto} images, local {took['local']:.1f} s, URLs {took['urls']:.1f} s", flush=True)
            started = time.perf_counter()
            again = url_vs.index(feed, image_column="image", id_column="sku")
            rerun_wall = time.perf_counter() - started
            rerun = host.stats(reset=True)
    finally:
        host.close()
    assert again.unchanged == args.images and again.fetched == 0 and rerun["bodies"] == 0

    n = args.images
    figures = {
        "images": n, "rounds": args.rounds, "latency_s": args.latency, "concurrency": args.concurrency,
        "per_host": args.per_host,
        "local_seconds": round(local_s, 2), "local_images_per_s": round(n / local_s, 2),
        "urls_seconds": round(urls_s, 2), "urls_images_per_s": round(n / urls_s, 2),
        "urls_vs_local_throughput": round(local_s / urls_s, 3),
        "urls_downloads": downloads, "urls_peak_concurrent_requests": peak,
        "rerun_seconds": round(again.seconds, 2), "rerun_wall_seconds": round(rerun_wall, 2),
        "rerun_vs_urls_time": round(again.seconds / urls_s, 4),
        "rerun_requests": rerun["requests"], "rerun_downloads": rerun["bodies"],
        "per_round": rounds,
    }
    settings = {k: v for k, v in vars(args).items() if k != "results_dir"}
    out = results.write("bench_sources", figures, settings=settings, folder=results.folder_arg(args.results_dir))
    m = results.machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, bf16 {m['bf16']}, torch {m['torch']}")
    print(f"local disk: {n} images in {local_s:.1f} s ({n / local_s:.2f} img/s)")
    print(f"URLs (+{args.latency * 1000:.0f} ms a request): {urls_s:.1f} s ({n / urls_s:.2f} img/s): "
          f"{local_s / urls_s:.2f} of local throughput (target >= 0.8); {downloads} downloads, "
          f"at most {peak} requests at once")
    print(f"unchanged re-run of the {n}-URL feed: {again.seconds:.2f} s, {again.seconds / urls_s:.3f} of the time "
          f"the URLs took to index (target <= 0.1); {rerun['requests']} requests, {rerun['bodies']} downloads")
    if out is not None:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
