"""Memory benchmark: peak RSS of `vitsearch index` over 10k and 100k images should be flat.

    python benchmarks/bench_memory.py [--sizes 10000,100000] [--model DIR] [--keep DIR]

Writes N distinct small PNGs (48 x 48, one folder per 1,000), runs `vitsearch index` on them as a
fresh process into a fresh Milvus Lite file, and samples the resident memory of the process and
its decode workers every 0.2 s. Streaming means the peak does not grow with N beyond the file list
(a path and a few numbers per image). ``--model`` defaults to the bundled model; a tiny model
(``--model tiny``, made on the spot) measures the pipeline's own memory faster. With a Milvus Lite
file the store's buffers live in the same process and are counted; ``--uri`` a server to leave them out.
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
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import results


def write_images(folder: str, n: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 4, 4, 3), dtype=np.uint8)
    for i in range(n):
        sub = os.path.join(folder, f"{i // 1000:04d}")
        if i % 1000 == 0:
            os.makedirs(sub, exist_ok=True)
        small = base[i % 64].copy()
        small[i % 4, (i // 4) % 4] = [(i >> 8) & 255, i & 255, (i >> 16) & 255]  # every image distinct
        Image.fromarray(small).resize((48, 48), Image.BILINEAR).save(os.path.join(sub, f"{i}.png"), compress_level=1)


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def measure(folder: str, uri: str, model: str | None) -> dict:
    cmd = [sys.executable, "-m", "vitsearch", "index", folder, "--uri", uri, "--json"]
    if model:
        cmd += ["--model", model]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        samples.append((time.perf_counter() - started, tree_rss(proc.pid)))
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(err)
    summary = json.loads(out)
    rss = [r for _, r in samples if r]
    n = len(rss)
    return {"images": summary["added"], "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(max(rss) / 2**20, 1),
            "rss_mb_at_25_50_75_100pct_of_run": [round(rss[min(n - 1, int(n * f))] / 2**20, 1)
                                                 for f in (0.25, 0.5, 0.75, 0.999)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--model", help="a model folder, 'tiny' (made here), or none for the bundled one")
    parser.add_argument("--keep", help="write the images here and keep them (default: a temporary folder)")
    parser.add_argument("--uri", help="a Milvus server URI (default: a fresh Milvus Lite file, in-process)")
    results.add_argument(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model == "tiny":
            sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
            from pathlib import Path

            from helpers import tiny_model

            model = str(tiny_model(Path(tmp) / "tiny", image=32))
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            folder = os.path.join(args.keep or tmp, f"images_{n}")
            if not os.path.isdir(folder):
                write_images(folder, n)
            uri = args.uri or os.path.join(tmp, f"m{n}.db")
            if args.uri:
                from vitsearch.store import Store

                Store(args.uri, "images").drop()  # a fresh collection each time
            row = measure(folder, uri, model)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| images | seconds | peak RSS MB | RSS MB at 25 / 50 / 75 / 100 % of the run |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']:,} | {r['seconds']} | {r['peak_rss_mb']} | "
              f"{' / '.join(str(v) for v in r['rss_mb_at_25_50_75_100pct_of_run'])} |")
    results.write("bench_memory", {"runs": rows}, variant="Milvus server" if args.uri else "Milvus Lite (in-process)",
                  settings={"sizes": args.sizes, "model": args.model or "bundled"},
                  folder=results.folder_arg(args.results_dir))


if __name__ == "__main__":
    main()
