"""Start-up: how long a fresh `vitsearch` process takes, against `import torch` and the model alone.

    python benchmarks/bench_startup.py [--runs 5] [--images 240] [--out benchmarks/out/startup]

Every figure is the median of ``--runs`` fresh processes (wall seconds; CPU seconds of the process
and its children beside them, which a busy machine disturbs less), measured in this run, on this
machine; a ratio is taken within each run (its measures are interleaved), then the median:

* ``import_torch``: ``python -c "import torch"``, the baseline every figure is compared with;
* ``query_new``: ``vitsearch query NEW.jpg -k 10`` on a store of the sample images, NEW.jpg not in it
  (decode, model, search); target: at most 1.6 x ``import_torch``;
* ``query_indexed``: the same for an indexed image (its stored vector; neither torch nor the model);
* ``index``: ``vitsearch index`` of ``--images`` small mixed pictures (photos, clip art, small PNGs)
  into a fresh store, against ``floor``: a process that imports torch, loads the model and embeds
  as many pictures, already decoded, in batches of 32 at the same precision (the model alone);
  target: at most 1.3 x ``floor``;
* ``first_batch``: process start to the first embedded batch of that index run, as the CLI runs it
  (the model in a second process, :mod:`vitsearch.encoder_process`); target: 3 s;
* ``first_batch_in_process``: the same with the model in the indexing process (the Python API's way,
  ``VITSEARCH_ENCODER_PROCESS=0`` for the CLI);
* ``first_batch_floor``: what any first batch costs at least: ``import torch``, the weights and one
  batch of 32 pictures already decoded;
* ``naive`` (one run): the per-image pipeline of ``bench_index.py`` (transformers' processor, one
  model call and one insert per image) on the same pictures.

Prints the figures and writes ``benchmarks/results/startup-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import results

SAMPLES = ROOT / "sample_images"
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

# The model alone: what any pipeline pays at least (imports, weights, forward passes), nothing else.
FLOOR = """
import sys, time
import numpy as np, torch
from vitsearch.checkpoint import load_spec
from vitsearch.embed import Encoder
n = int(sys.argv[1])
enc = Encoder(load_spec(None), device="cpu", precision=sys.argv[2], batch_size=32, num_workers=0)
h, w = enc.preprocessing.input_size
pixels = np.random.default_rng(0).integers(0, 256, (n, 3, h, w), dtype=np.uint8)
for start in range(0, n, 32):
    enc.embed_pixels(pixels[start:start + 32])
"""

# `vitsearch index` through the API, until the first batch comes out of the model: then it says when.
# argv[4]: "process" (the model in a second process, as the CLI does) or "inline".
FIRST_BATCH = """
import os, sys, time
from vitsearch.api import VisualSearch

def progress(event):
    if event.kind == "embedding" and event.done:
        print(time.time(), flush=True)
        os._exit(0)

vs = VisualSearch(sys.argv[2], precision=sys.argv[3], encoder_process=sys.argv[4] == "process")
vs.index([sys.argv[1]], progress=progress)
"""

# The least a first batch costs: import torch, the weights, 32 decoded pictures through the model.
FIRST_FLOOR = """
import sys, time
import numpy as np
from vitsearch.checkpoint import load_spec
from vitsearch.embed import Encoder
enc = Encoder(load_spec(None), device="cpu", precision=sys.argv[1], batch_size=32, num_workers=0)
h, w = enc.preprocessing.input_size
enc.embed_pixels(np.random.default_rng(0).integers(0, 256, (32, 3, h, w), dtype=np.uint8))
print(time.time(), flush=True)
"""


def make_images(folder: Path, n: int) -> Path:
    """``n`` distinct small pictures cycled from the samples: JPEG photos, RGBA emoji, 28-px PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for sub in ("photos", "emoji", "fashion", "near_duplicates") for p in (SAMPLES / sub).iterdir()
                     if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for i in range(n):
        src = sources[i % len(sources)]
        dst = folder / f"{i:04d}_{src.name}"
        if dst.exists():
            continue
        img = Image.open(src)
        img.load()
        arr = np.asarray(img).copy()
        if arr.ndim == 2:  # palette or grey
            arr[0, 0] = i % 256
        else:
            arr[0, 0, :3] = [i % 256, i // 256, 7]  # distinct content: no vector is reused
        Image.fromarray(arr, img.mode).save(dst)
    return folder


def run(cmd: list[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the process and its children, the completed process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=False, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


def medians(samples: list[tuple[float, float]]) -> dict:
    walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
    return {"wall_s": round(statistics.median(walls), 3), "cpu_s": round(statistics.median(cpus), 3),
            "runs": [round(w, 3) for w in walls]}


# Each ratio is taken within a run (the measures of a run are minutes apart, those of different runs
# may not be: a busy machine slows a whole run), then the median over the runs.
RATIOS = {
    "query_new_over_import_torch": ("query_new", "import_torch"),
    "query_indexed_over_import_torch": ("query_indexed", "import_torch"),
    "index_over_floor": ("index", "floor"),
    "first_batch_over_import_torch": ("first_batch", "import_torch"),
    "first_batch_over_its_floor": ("first_batch", "first_batch_floor"),
    "first_batch_in_process_over_its_floor": ("first_batch_in_process", "first_batch_floor"),
}


def ratio(top: list[tuple[float, float]], bottom: list[tuple[float, float]], cpu: bool = True) -> dict:
    out = {"wall": round(statistics.median(t[0] / b[0] for t, b in zip(top, bottom)), 2)}
    if cpu:
        out["cpu"] = round(statistics.median(t[1] / b[1] for t, b in zip(top, bottom)), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "startup"))
    parser.add_argument("--no-naive", action="store_true", help="skip the naive per-image pipeline")
    args = parser.parse_args()
    load_before = os.getloadavg()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    from vitsearch.device import cpu_supports_bf16

    precision = "bf16" if cpu_supports_bf16() else "fp32"
    images = make_images(out / "images", args.images)
    query_store = str(out / "samples.db")
    vs = [PY, "-m", "vitsearch"]
    run(vs + ["index", str(SAMPLES), "--uri", query_store, "--json", "--precision", precision])
    new = out / "new.jpg"
    Image.open(SAMPLES / "photos" / "chelsea.jpg").rotate(7).save(new)
    indexed = min((SAMPLES / "photos").glob("*.jpg"))

    firsts = ("first_batch", "first_batch_in_process", "first_batch_floor")
    samples: dict[str, list] = {k: [] for k in ("import_torch", "query_new", "query_indexed", "floor", "index", *firsts)}
    for r in range(args.runs):  # interleaved, so that a busy spell hits every measure alike
        samples["import_torch"].append(run([PY, "-c", "import torch"])[:2])
        samples["query_new"].append(run(vs + ["query", str(new), "-k", "10", "--uri", query_store, "--precision", precision])[:2])
        samples["query_indexed"].append(run(vs + ["query", str(indexed), "-k", "10", "--uri", query_store])[:2])
        samples["floor"].append(run([PY, "-c", FLOOR, str(args.images), precision])[:2])
        db = str(out / f"index-{r}.db")
        samples["index"].append(run(vs + ["index", str(images), "--uri", db, "--json", "--precision", precision])[:2])
        for name, how in (("first_batch", "process"), ("first_batch_in_process", "inline")):
            db = str(out / f"{name}-{r}.db")
            start = time.time()
            _, _, done = run([PY, "-c", FIRST_BATCH, str(images), db, precision, how])
            samples[name].append((float(done.stdout) - start, 0.0))
        start = time.time()
        _, _, done = run([PY, "-c", FIRST_FLOOR, precision])
        samples["first_batch_floor"].append((float(done.stdout) - start, 0.0))
        print(f"run {r + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in samples.items()), file=sys.stderr)
    figures = {k: medians(v) for k, v in samples.items()}
    for name in firsts:
        del figures[name]["cpu_s"]
    for name, (top, bottom) in RATIOS.items():
        figures[name] = ratio(samples[top], samples[bottom], cpu=top not in firsts)
    figures["images"] = args.images
    if not args.no_naive:
        naive = run([PY, str(ROOT / "benchmarks" / "bench_index.py"), "--naive-run", str(images), str(out / "naive.db")])
        figures["naive_one_run"] = {"wall_s": round(naive[0], 3), "cpu_s": round(naive[1], 3)}
        last = samples["index"][-1]  # the run just before
        figures["naive_over_index"] = {"wall": round(naive[0] / last[0], 2), "cpu": round(naive[1] / last[1], 2)}
    figures["targets"] = {"query_new_over_import_torch": 1.6, "index_over_floor": 1.3, "first_batch_s": 3.0}
    figures["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps(figures, indent=2))
    path = results.write("bench_startup", figures, settings={**vars(args), "precision": precision})
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
