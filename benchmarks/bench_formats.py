"""Decode cost per photo of each format vitsearch reads, beside draft-mode JPEG (the bar).

One 12-MP scene (a sample photo scaled up, with sensor-like noise) is written as a phone or camera
would: JPEG (q 90), HEIC (q 50, about 2 MB at 12 MP like a phone's, with a 320-px thumbnail like an
iPhone's; pillow-heif), AVIF (Pillow), and a DNG with a 1024-px JPEG preview like Adobe's converter
writes, plus one without. Each file is then
decoded the way the indexer decodes it, ``load_image(path, draft=(D, D))`` with D the bundled model's
draft size (128 px), and in full; the EXIF read that indexing adds per file is timed too. Figures are
medians of --repeat runs, in ms per image, with ratios to draft-mode JPEG measured in the same run.

    python benchmarks/bench_formats.py [--megapixels 12] [--repeat 5]

Writes benchmarks/results/bench_formats-<YYYYMMDD-HHMMSS>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # photofiles: the DNG writer the tests use

sys.path.insert(0, str(ROOT / "benchmarks"))
import results
from photofiles import dng_bytes, exif_bytes

from vitsearch import formats
from vitsearch.exif import read_exif
from vitsearch.images import load_image

TAGS = dict(taken="2024:07:14 18:00:00", offset="+02:00", make="Apple", model="iPhone 15 Pro", gps=(48.8584, 2.2945))


def scene(megapixels: float) -> Image.Image:
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    base = Image.open(ROOT / "sample_images" / "photos" / "coffee.jpg").convert("RGB").resize((width, height),
                                                                                                Image.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def write_files(folder: Path, img: Image.Image) -> dict[str, Path]:
    files = {"jpeg": folder / "photo.jpg", "avif": folder / "photo.avif"}
    exif = exif_bytes(**TAGS)
    img.save(files["jpeg"], "JPEG", quality=90, exif=exif)
    img.save(files["avif"], "AVIF", quality=75, speed=8, exif=exif)
    if formats.register_plugins():
        files["heic"] = folder / "photo.heic"
        img.save(files["heic"], "HEIF", quality=50, exif=exif, thumbnails=[320])  # ~2 MB at 12 MP, as phones
    if formats.have_rawpy():
        rgb = np.asarray(img)
        preview = img.resize((1024, 768), Image.BILINEAR)
        files["dng"] = folder / "photo.dng"
        files["dng"].write_bytes(dng_bytes(rgb, taken=TAGS["taken"], offset=TAGS["offset"], make="Vitsearch",
                                           model="Bench", preview=preview))
        files["dng_no_preview"] = folder / "photo-no-preview.dng"
        files["dng_no_preview"].write_bytes(dng_bytes(rgb, make="Vitsearch", model="Bench"))
    return files


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--draft", type=int, default=128, help="the draft size (the bundled model's is 128)")
    args = parser.parse_args()
    draft = (args.draft, args.draft)

    with tempfile.TemporaryDirectory() as tmp:
        img = scene(args.megapixels)
        start = time.perf_counter()
        files = write_files(Path(tmp), img)
        print(f"wrote {', '.join(files)} at {img.width}x{img.height} in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)
        cases = {
            "jpeg_draft": lambda: load_image(files["jpeg"], draft=draft),  # the bar
            "jpeg_full": lambda: load_image(files["jpeg"]),
            "avif": lambda: load_image(files["avif"], draft=draft),  # AVIF has no reduced decode
        }
        if "heic" in files:
            cases["heic_thumbnail"] = lambda: load_image(files["heic"], draft=draft)
            cases["heic_full"] = lambda: load_image(files["heic"])
        if "dng" in files:
            cases["raw_preview"] = lambda: load_image(str(files["dng"]), draft=draft)
            cases["raw_half_size"] = lambda: load_image(str(files["dng_no_preview"]), draft=draft)
            cases["raw_full"] = lambda: load_image(str(files["dng_no_preview"]))
        for kind, path in files.items():
            if kind != "dng_no_preview":
                cases[f"exif_{kind}"] = lambda p=path: read_exif(p)
        ms = {}
        for name, fn in cases.items():
            repeat = max(1, args.repeat // 2) if name == "raw_full" else args.repeat
            ms[name] = timed(fn, repeat) * 1000
            print(f"{name:<16}{ms[name]:9.1f} ms", file=sys.stderr)
        sizes = {kind: path.stat().st_size for kind, path in files.items()}

    bar = ms["jpeg_draft"]
    figures = {
        "megapixels": round(img.width * img.height / 1e6, 2),
        "draft": args.draft,
        "repeat": args.repeat,
        "ms_per_image": {k: round(v, 2) for k, v in ms.items()},
        "ratio_to_jpeg_draft": {k: round(v / bar, 2) for k, v in ms.items() if not k.startswith("exif_")},
        "file_bytes": sizes,
        "pillow_heif_decode_threads": _heif_threads(),
    }
    path = results.write("bench_formats", figures, settings=vars(args))
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}", file=sys.stderr)


def _heif_threads() -> int | None:
    try:
        from pillow_heif import options
    except ImportError:
        return None
    return options.DECODE_THREADS


if __name__ == "__main__":
    main()
