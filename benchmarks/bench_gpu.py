"""GPU throughput: model alone vs decode alone vs `vitsearch index` end to end, one run.

    python benchmarks/bench_gpu.py [--small 1000] [--large 1000] [--workers 4,8,15]
                                   [--batch-sizes 64,256,512] [--out DIR] [--device cuda]

Two models: the bundled one (DINOv2-S/14 at 112 px) and a ViT-B/16 at 224 px. The ViT-B/16 is built
from its config with random weights and saved as a save_pretrained folder that `--model` takes (no
hub download; speed does not depend on the weights). Measures, in this order:

1. model alone: images/s of the backbone on a batch already on the GPU, fp32 and bf16 autocast,
   several batch sizes, and torch.compile (both models run on vitsearch's own ViT, whose attention is
   SDPA; a transformers model, of a family the core does not implement, is also timed with eager attention); and `Encoder.embed_pixels`
   (uint8 from host memory: copy, normalise, model, copy back) at the same sizes;
2. decode alone: vitsearch's decode + resize in N DataLoader workers (the indexer's loader), small
   PNGs and 12-MP JPEGs apart; and, where torchvision is importable, nvJPEG on the GPU for comparison;
3. pipeline: decode workers + model in one process, the model loaded (the indexer's embedding rate
   without start-up, hashing or the store), as a share of the best model-alone rate;
4. end to end: `vitsearch index` of the mixed folder into a fresh Milvus Lite store for each model,
   worker count and batch size, as its own process: wall time and images/s over the run's own
   seconds (start-up excluded), and that rate as a share of the best model-alone rate.

`--device cpu` runs the same steps on the CPU (to try the script; the figures are not GPU figures).
Prints one JSON line per measurement and writes them all to OUT/results.json, and to a results file
(benchmarks/results.py) grouped by step.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import results

RESULTS: list[dict] = []


def report(**row) -> None:
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


def _large_base(args: tuple[int, str]) -> bytes:
    i, photo = args
    img = Image.open(photo).convert("RGB").resize((4000, 3000), Image.BICUBIC)
    noise = np.random.default_rng(i).integers(-6, 7, (3000, 4000, 3), dtype=np.int16)
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_images(folder: Path, small: int, large: int) -> list[Path]:
    """Small PNGs from sample_images (a pixel changed in each) and 12-MP JPEGs: 16 distinct ones,
    each copied with bytes appended after the end-of-image marker, so that every file has its own
    sha256 (nothing is reused) while decoding costs the same."""
    folder.mkdir(parents=True, exist_ok=True)
    pngs = sorted((ROOT / "sample_images").rglob("*.png"))
    photos = sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))
    out = []
    for i in range(small):
        arr = np.asarray(Image.open(pngs[i % len(pngs)]).convert("RGB")).copy()
        arr[0, 0] = [i % 256, i // 256 % 256, 7]
        dst = folder / f"small_{i:05d}.png"
        Image.fromarray(arr).save(dst)
        out.append(dst)
    if large:
        with ProcessPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
            bases = list(pool.map(_large_base, [(i, str(photos[i % len(photos)])) for i in range(min(16, large))]))
        for i in range(large):
            dst = folder / f"large_{i:05d}.jpg"
            dst.write_bytes(bases[i % len(bases)] + i.to_bytes(4, "big"))
            out.append(dst)
    return out


def make_vit_b16(folder: Path) -> str:
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, qkv_bias=True)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 224, "width": 224},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    return str(folder)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _rate(fn, device: str, images_per_call: int, seconds: float) -> float:
    """Images/s of ``fn`` after warm-up, timed for about ``seconds``."""
    for _ in range(3):
        fn()
    _sync(device)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    _sync(device)
    return calls * images_per_call / (time.perf_counter() - start)


def set_attention(model, impl: str) -> str:
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation(impl)
        except Exception:  # noqa: BLE001 - older transformers: fall back to the config switch
            model.config._attn_implementation = impl
    else:
        model.config._attn_implementation = impl
    return model.config._attn_implementation


def _forward(module, autocast, x) -> None:
    import torch

    with torch.inference_mode(), autocast():
        module(x)


def model_alone(name: str, model: str | None, device: str, batch_sizes: list[int], seconds: float) -> float:
    """Returns the best SDPA images/s, bf16 where timed (the reference for the end-to-end share)."""
    import torch

    from vitsearch import Encoder
    from vitsearch.device import cpu_supports_bf16
    from vitsearch.vit import VisionTransformer

    best = 0.0
    # bf16 on a CPU without it is emulated and many times slower than fp32: not worth timing
    for precision in ("fp32", "bf16") if device == "cuda" or cpu_supports_bf16() else ("fp32",):
        enc = Encoder(model, device=device, precision=precision, num_workers=0)
        h, w = enc.spec.preprocessing.input_size
        core = isinstance(enc.backbone.model, VisionTransformer)  # vitsearch's own ViT: SDPA only
        for attn in ("sdpa",) if core else ("sdpa", "eager"):
            used = "sdpa (vitsearch core)" if core else set_attention(enc.backbone.model, attn)
            for bs in batch_sizes if attn == "sdpa" else batch_sizes[-1:]:  # eager: the comparison, at one size
                x = torch.randn(bs, 3, h, w, device=device)
                pixels = torch.randint(0, 256, (bs, 3, h, w), dtype=torch.uint8)
                if device == "cuda":
                    pixels = pixels.pin_memory()
                rate = _rate(partial(_forward, enc.backbone, enc._autocast, x), device, bs, seconds)
                piped = _rate(partial(enc.embed_pixels, pixels), device, bs, seconds) if attn == "sdpa" else None
                report(step="model_alone", model=name, precision=precision, attention=used, batch=bs,
                       images_per_s=round(rate, 1), embed_pixels_images_per_s=piped and round(piped, 1))
                if attn == "sdpa":
                    best = max(best, rate)
        if not core:
            set_attention(enc.backbone.model, "sdpa")
        if precision == "bf16" and device == "cuda":
            bs = batch_sizes[-1]
            x = torch.randn(bs, 3, h, w, device=device)
            compiled = torch.compile(enc.backbone)
            start = time.perf_counter()
            _forward(compiled, enc._autocast, x)
            _sync(device)
            warm = time.perf_counter() - start
            rate = _rate(partial(_forward, compiled, enc._autocast, x), device, bs, seconds)
            report(step="model_alone", model=name, precision=precision, attention="sdpa", batch=bs, compiled=True,
                   compile_seconds=round(warm, 1), images_per_s=round(rate, 1))
        if device == "cuda":
            torch.cuda.empty_cache()
    return best


def decode_alone(files: list[Path], input_size: tuple[int, int], workers: list[int]) -> None:
    import torch

    from vitsearch.checkpoint import load_spec
    from vitsearch.embed import _collate, _FileDataset, worker_init

    prep = load_spec(None).preprocessing
    for kind in ("small", "large"):
        group = [str(f) for f in files if f.name.startswith(kind)]
        for n in workers:
            loader = torch.utils.data.DataLoader(_FileDataset(group, prep), batch_size=64, num_workers=n,
                                                 collate_fn=_collate, worker_init_fn=worker_init if n else None)
            start = time.perf_counter()
            count = sum(len(b) for b in loader)
            report(step="decode_alone", kind=kind, workers=n, images=count,
                   images_per_s=round(count / (time.perf_counter() - start), 1))
    try:
        import torchvision.io as tvio
    except Exception as exc:  # noqa: BLE001 - torchvision is optional and absent from vitsearch's deps
        report(step="nvjpeg", skipped=f"torchvision not importable: {exc}")
        return
    if not torch.cuda.is_available():
        return
    large = [f for f in files if f.name.startswith("large")][:256]
    datas = [tvio.read_file(str(f)) for f in large]
    h, w = input_size
    for bs in (16, 64):

        def call(batch=datas[:bs]):
            imgs = tvio.decode_jpeg(batch, device="cuda")
            return [torch.nn.functional.interpolate(im[None].float(), size=(h, w), mode="bilinear", antialias=True)
                    for im in imgs]

        rate = _rate(call, "cuda", bs, 3.0)
        report(step="nvjpeg", kind="large", batch=bs, images_per_s=round(rate, 1),
               note="file bytes already in memory; decode + antialiased resize on the GPU")


def pipeline(name: str, model: str | None, files: list[Path], device: str, workers: list[int], batch: int,
             best: float) -> None:
    """Decode workers + model in this process, the model already loaded: the indexer's embedding
    rate without start-up, hashing or the store."""
    from vitsearch import Encoder

    paths = [str(f) for f in files]
    for n in workers:
        enc = Encoder(model, device=device, batch_size=batch, num_workers=n)
        enc.encode(paths[:2])
        start = time.perf_counter()
        count = sum(r.vector is not None for r in enc.encode_files(paths))
        rate = count / (time.perf_counter() - start)
        report(step="pipeline", model=name, workers=n, batch=batch, images=count, images_per_s=round(rate, 1),
               share_of_model_alone=round(rate / best, 3) if best else None)
        del enc


def end_to_end(name: str, model: str | None, folder: Path, device: str, workers: list[int], batch_sizes: list[int],
               best: float, out: Path, n_files: int) -> None:
    """Every worker count at the middle batch size, then the other batch sizes at the most workers."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    middle = batch_sizes[len(batch_sizes) // 2]
    runs = [(n, middle) for n in workers] + [(workers[-1], bs) for bs in batch_sizes if bs != middle]
    for n, bs in runs:
        db = out / f"e2e_{name}_{n}_{bs}.db"
        shutil.rmtree(db, ignore_errors=True)
        cmd = [sys.executable, "-m", "vitsearch", "index", str(folder), "--uri", str(db), "--json",
               "--device", device, "--batch-size", str(bs), "--workers", str(n)]
        if model:
            cmd += ["--model", model]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if done.returncode:
            report(step="end_to_end", model=name, workers=n, batch=bs, error=done.stderr.strip()[-800:])
            continue
        summary = json.loads(done.stdout)
        rate = summary["embedded"] / summary["seconds"] if summary["seconds"] else 0.0
        report(step="end_to_end", model=name, workers=n, batch=bs, images=n_files, embedded=summary["embedded"],
               wall_seconds=round(wall, 2), run_seconds=summary["seconds"], images_per_s=round(rate, 1),
               share_of_model_alone=round(rate / best, 3) if best else None)
        shutil.rmtree(db, ignore_errors=True)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--workers", type=ints, default=[4, 8, 15])
    parser.add_argument("--batch-sizes", type=ints, default=[64, 256, 512])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per model-alone figure")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", default="model,decode,pipeline,e2e")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "gpu"))
    results.add_argument(parser)
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: torch sees no CUDA GPU (use --device cpu to try the script)")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    report(step="machine", device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
           torch=torch.__version__, cpus=os.cpu_count())
    start = time.perf_counter()
    files = make_images(out / "images", args.small, args.large)
    report(step="images", small=args.small, large=args.large, seconds=round(time.perf_counter() - start, 1))
    models = {"bundled": None, "vit-b16": make_vit_b16(out / "vit-b16")}
    steps = args.steps.split(",")
    best = {}
    for name, model in models.items():
        if "model" in steps:
            best[name] = model_alone(name, model, args.device, args.batch_sizes, args.seconds)
    if "decode" in steps:
        decode_alone(files, (224, 224), args.workers)
    if "pipeline" in steps:
        for name, model in models.items():
            pipeline(name, model, files, args.device, args.workers, args.batch_sizes[len(args.batch_sizes) // 2],
                     best.get(name, 0.0))
    if "e2e" in steps:
        for name, model in models.items():
            end_to_end(name, model, out / "images", args.device, args.workers, args.batch_sizes, best.get(name, 0.0),
                       out, len(files))
    (out / "results.json").write_text(json.dumps(RESULTS, indent=1))
    by_step: dict[str, list[dict]] = {}
    for row in RESULTS:
        if row["step"] not in ("machine", "images"):
            by_step.setdefault(row["step"], []).append({k: v for k, v in row.items() if k != "step"})
    results.write("bench_gpu", by_step, variant=None if args.device == "cuda" else f"--device {args.device}",
                  settings={"small": args.small, "large": args.large, "workers": args.workers,
                            "batch_sizes": args.batch_sizes, "device": args.device, "steps": args.steps},
                  folder=results.folder_arg(args.results_dir))


if __name__ == "__main__":
    main()
