"""Lay out the offline labelled sets as class folders, for `vitsearch train` and `vitsearch eval`.

    python scripts/make_datasets.py [--cache /tmp/vitsearch-material] [--out datasets]

Writes (one folder per class, the layout `vitsearch train DATA` reads):
  datasets/fashion-mnist/train/<class>/*.png   60,000 items (Debian ``dataset-fashion-mnist``, MIT)
  datasets/fashion-mnist/test/<class>/*.png    10,000 held-out items
  datasets/emoji/train/<subcategory>/*.png     Noto emoji, 64 px, half of each subcategory
  datasets/emoji/test/<subcategory>/*.png      the other half (npm ``emoji-datasource-google``:
                                               images Apache-2.0, package MIT)
  datasets/openclipart/train/<subject>/*.png   Openclipart (Debian ``openclipart-png``, public domain),
                                               the subjects of every top-level folder but those below
  datasets/openclipart/heldout-<set>/<subject>/*.png   whole top-level subjects that never enter
                                               training, one category set each (HELD_OUT)
Fashion-MNIST items are inverted to dark-on-white, like product photos on a white background (the
same convention as ``sample_images/fashion``). Emoji are split by their order within a
subcategory (even → train, odd → test), so both halves cover every subcategory with two or more items.
Openclipart's label is the subject folder (``animals/birds`` → ``animals__birds``); a folder with
fewer than MIN_SUBJECT images joins its parent's subject, ``unsorted`` is left out, and a training
subject keeps at most TRAIN_CAP images (``shapes/stars`` alone has 1,378). Clip art is flattened on
white and shrunk to at most 256 px on its longer side.
Re-running skips sets that are already complete.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import tarfile

from material import DEFAULT_CACHE, FASHION_CLASSES, fashion_split, fetch
from PIL import Image


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def write_fashion(fashion_dir: str, out: str) -> int:
    written = 0
    for split in ("train", "test"):
        images, labels = fashion_split(fashion_dir, split)
        root = os.path.join(out, "fashion-mnist", split)
        marker = os.path.join(root, ".complete")
        if os.path.exists(marker):
            continue
        for name in FASHION_CLASSES:
            os.makedirs(os.path.join(root, name), exist_ok=True)
        for i, (img, label) in enumerate(zip(images, labels)):
            Image.fromarray(255 - img, "L").save(os.path.join(root, FASHION_CLASSES[label], f"{split}_{i:05d}.png"))
        open(marker, "w").close()
        written += len(images)
    return written


def write_emoji(emoji_tgz: str, out: str) -> int:
    root = os.path.join(out, "emoji")
    if os.path.exists(os.path.join(root, ".complete")):
        return 0
    written = 0
    with tarfile.open(emoji_tgz) as tf:
        meta = json.load(tf.extractfile("package/emoji.json"))
        by_sub: dict[str, list] = {}
        for e in sorted(meta, key=lambda e: e.get("sort_order", 0)):
            if e.get("has_img_google"):
                by_sub.setdefault(f"{_slug(e['category'])}__{_slug(e['subcategory'])}", []).append(e)
        for sub, items in sorted(by_sub.items()):
            for n, e in enumerate(items):
                split = "train" if n % 2 == 0 else "test"
                folder = os.path.join(root, split, sub)
                os.makedirs(folder, exist_ok=True)
                data = tf.extractfile(f"package/img/google/64/{e['image']}").read()
                img = Image.open(io.BytesIO(data)).convert("RGBA")
                flat = Image.new("RGB", img.size, (255, 255, 255))
                flat.paste(img, mask=img.getchannel("A"))
                flat.save(os.path.join(folder, f"{os.path.splitext(e['image'])[0]}.png"))
                written += 1
    open(os.path.join(root, ".complete"), "w").close()
    return written


# Leave-one-domain-out: these top-level Openclipart subjects never enter training; each named set is
# a held-out category set of its own (P@k among its subjects). 28 subjects, 1,358 images.
HELD_OUT = {"nature": ("animals", "food", "plants"), "objects": ("transportation", "tools", "buildings")}
MIN_SUBJECT = 12
TRAIN_CAP = 200
CLIPART_SIDE = 256
_EXCLUDED = ("unsorted",)


def clipart_subjects(root: str) -> dict[str, list[str]]:
    """Subject label → PNG paths; small folders join their parent's subject."""
    own: dict[str, list[str]] = {}
    for folder, _, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        if rel == "." or rel.split(os.sep)[0] in _EXCLUDED:
            continue
        own[rel] = sorted(os.path.join(folder, f) for f in files if f.lower().endswith(".png"))
    subjects: dict[str, list[str]] = {}
    for rel in sorted(own, key=lambda r: -r.count(os.sep)):  # deepest first, so merges cascade upwards
        files = own[rel] + subjects.pop(rel, [])
        parent = os.path.dirname(rel)
        if len(files) < MIN_SUBJECT and parent:
            own[parent] = own.get(parent, []) + files
        elif len(files) >= MIN_SUBJECT:
            subjects[rel] = files
    return {rel.replace(os.sep, "__"): sorted(files) for rel, files in subjects.items()}


def _flatten(path: str, side: int) -> Image.Image:
    img = Image.open(path)
    img.thumbnail((side, side), Image.LANCZOS)
    img = img.convert("RGBA")
    flat = Image.new("RGB", img.size, (255, 255, 255))
    flat.paste(img, mask=img.getchannel("A"))
    return flat


def write_clipart(clipart_dir: str, out: str) -> int:
    root = os.path.join(out, "openclipart")
    if os.path.exists(os.path.join(root, ".complete")):
        return 0
    held = {top: name for name, tops in HELD_OUT.items() for top in tops}
    written = 0
    for subject, files in sorted(clipart_subjects(clipart_dir).items()):
        top = subject.split("__")[0]
        split = f"heldout-{held[top]}" if top in held else "train"
        if split == "train" and len(files) > TRAIN_CAP:
            files = random.Random(subject).sample(files, TRAIN_CAP)
        folder = os.path.join(root, split, subject)
        os.makedirs(folder, exist_ok=True)
        for path in files:
            try:
                img = _flatten(path, CLIPART_SIDE)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                print(f"skipping {path}: {exc}")
                continue
            img.save(os.path.join(folder, os.path.basename(path)))
            written += 1
    open(os.path.join(root, ".complete"), "w").close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--out", default="datasets")
    args = parser.parse_args()
    src = fetch(args.cache)
    n = write_fashion(src["fashion"], args.out) + write_emoji(src["emoji"], args.out)
    n += write_clipart(src["openclipart"], args.out)
    print(f"wrote {n} images under {args.out}")


if __name__ == "__main__":
    main()
