"""The model alone on the CPU: images/s of the ViT core, batch 32, pixels already decoded and normalised.

    python benchmarks/bench_model.py [--model DIR] [--sizes 112,126,140] [--rounds 5] [--batch 32]

For each precision the CPU runs natively (fp32; bf16 autocast where it has AVX512-BF16 or AMX) and
each input size (the model's own first; other sizes resample the position table, as the model card's
resolution tries did), two forward passes alternate within every round, so that a busy spell hits
both alike:

* ``all_tokens`` (the baseline): every token through every block, then the final norm of CLS;
* ``cls_only``: vitsearch's forward, whose last block computes the CLS token alone (the other
  tokens are its keys and values only; the same vector).

Every size is measured in every round too. Figures: the median images/s of each, and ``speedup``,
the median over rounds of the ratio within a round. ``size_cost`` is the model's own size's
``cls_only`` rate over another size's, within a round, then the median: what another input size
would cost. Prints the figures and writes them to a results file (benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import results

from vitsearch import vit
from vitsearch.checkpoint import load_spec
from vitsearch.device import autocast, cpu_supports_bf16


def all_tokens(model: vit.VisionTransformer, pixels: torch.Tensor) -> torch.Tensor:
    """The forward pass before the CLS shortcut: every token through the last block too."""
    x = model.embeddings(pixels)
    for block in model.layers:
        x = block(x)
    return model.norm(x[:, 0])


def rate(forward, model: vit.VisionTransformer, pixels: torch.Tensor, batches: int) -> float:
    """Images/s of ``forward(model, pixels)`` over ``batches`` calls."""
    started = time.perf_counter()
    for _ in range(batches):
        forward(model, pixels)
    return batches * pixels.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder (default: the bundled model)")
    parser.add_argument("--sizes", default="112,126,140", help="input sizes after the model's own, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="batches per measurement")
    results.add_argument(parser)
    args = parser.parse_args()

    spec = load_spec(args.model)
    own = spec.preprocessing.input_size[0]
    sizes = [own] + [s for s in dict.fromkeys(int(v) for v in args.sizes.split(",") if v) if s != own]
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    forwards = {"all_tokens": all_tokens, "cls_only": lambda model, x: model(x)}
    figures: dict = {}
    models = {size: vit.from_pretrained(spec.path, image_size=size).eval() for size in sizes}
    inputs = {size: torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)) for size in sizes}
    for precision in precisions:
        # Every size and both passes within each round: a VM whose speed drifts over minutes then
        # shifts the figures of one round alike, and the ratios (taken within a round) hold.
        samples = {(size, name): [] for size in sizes for name in forwards}
        with torch.inference_mode(), autocast("cpu", precision):
            for size in sizes:  # warm-up
                for forward in forwards.values():
                    forward(models[size], inputs[size])
            for _ in range(args.rounds):
                for size in sizes:
                    for name, forward in forwards.items():
                        samples[size, name].append(rate(forward, models[size], inputs[size], args.batches))
        own_rates = samples[own, "cls_only"]
        for size in sizes:
            row = {name: round(statistics.median(samples[size, name]), 1) for name in forwards}
            ratios = zip(samples[size, "cls_only"], samples[size, "all_tokens"])
            row["speedup"] = round(statistics.median(c / a for c, a in ratios), 3)
            if size != own:
                row["size_cost"] = round(statistics.median(o / c for o, c in zip(own_rates, samples[size, "cls_only"])), 2)
            figures[f"{precision}_{size}px"] = row
            print(json.dumps({precision: size, **row}), file=sys.stderr)
    print(json.dumps(figures, indent=2))
    path = results.write("bench_model", figures, settings={**vars(args), "model": spec.name if args.model else "bundled"},
                         notes="model only, batch of pixels already normalised; a ratio is taken within a round, then the median",
                         folder=results.folder_arg(args.results_dir))
    if path:
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
