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
  datasets/openclipart-crops/<subject>/*_c0.png   one stored random crop of each training clip-art
                                               picture (CROP_AREA, CROP_ASPECT, mirrored half the
                                               time): new views whose teacher rows are their own
  datasets/emoji-styles/heldout-fxemoji/<subcategory>/*.png   every emoji of Mozilla's fxemoji, a
                                               style never trained on (STYLE_HELD_OUT): a held-out set
  datasets/emoji-styles/train/<subcategory>/*.png   the train-half emoji as four more designers
                                               drew them; tried (try 5 of docs/models.md), which did
                                               not help, so the bundled recipe leaves them out
  datasets/icons/<category>/*.png            Material Design Icons (material.ICON_PACKAGE, Apache-2.0)
                                               of the categories that name things (ICON_CATEGORIES),
                                               black on white at 96 px: concepts, not subjects, of
                                               another source (the held-out subjects stay Openclipart's)
  Both emoji-styles sets come from npm ``@iconify-json`` SVG sets (material.py's
  EMOJI_STYLE_PACKAGES, with their licences), rendered at 64 px with resvg (PyPI ``resvg-py``, the
  ``datasets`` extra).
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
import re
import tarfile

from material import DEFAULT_CACHE, FASHION_CLASSES, fashion_split, fetch
from PIL import Image, ImageOps


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


def emoji_entries(package: tarfile.TarFile) -> list[tuple[dict, str, str]]:
    """(emoji-datasource entry, subcategory label, "train" or "test") of every emoji with a Noto image,
    from the opened ``emoji-datasource-google`` package.

    Split by order within a subcategory (even → train, odd → test), so both halves cover every
    subcategory with two or more items; every style of an emoji falls on the same side.
    """
    meta = json.load(package.extractfile("package/emoji.json"))
    by_sub: dict[str, list] = {}
    for e in sorted(meta, key=lambda e: e.get("sort_order", 0)):
        if e.get("has_img_google"):
            by_sub.setdefault(f"{_slug(e['category'])}__{_slug(e['subcategory'])}", []).append(e)
    return [(e, sub, "train" if n % 2 == 0 else "test") for sub, items in sorted(by_sub.items())
            for n, e in enumerate(items)]


def _on_white(img: Image.Image) -> Image.Image:
    img = img.convert("RGBA")
    flat = Image.new("RGB", img.size, (255, 255, 255))
    flat.paste(img, mask=img.getchannel("A"))
    return flat


def write_emoji(emoji_tgz: str, out: str) -> int:
    root = os.path.join(out, "emoji")
    if os.path.exists(os.path.join(root, ".complete")):
        return 0
    written = 0
    with tarfile.open(emoji_tgz) as tf:
        for e, sub, split in emoji_entries(tf):
            folder = os.path.join(root, split, sub)
            os.makedirs(folder, exist_ok=True)
            data = tf.extractfile(f"package/img/google/64/{e['image']}").read()
            flat = _on_white(Image.open(io.BytesIO(data)))
            flat.save(os.path.join(folder, f"{os.path.splitext(e['image'])[0]}.png"))
            written += 1
    open(os.path.join(root, ".complete"), "w").close()
    return written


# The same emoji drawn by other designers: SVG sets of npm's ``@iconify-json`` packages, rendered at
# the Noto images' 64 px. An icon is matched to its emoji-datasource entry (by codepoint where the
# package lists one, else by its name), takes that entry's subcategory as its label and stays on the
# entry's side of the split, so the emoji test half is unseen in every style. STYLE_HELD_OUT never
# enters training: a whole unseen style, a leave-one-domain-out set of its own (every emoji it has).
STYLE_HELD_OUT = "fxemoji"
EMOJI_SIDE = 64


def _name_key(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def render_icon(icons: dict, name: str, side: int) -> Image.Image:
    """One icon of an Iconify JSON set, rendered to side x side on white."""
    import resvg_py

    icon = icons["icons"][name]
    width, height = icon.get("width", icons.get("width", 16)), icon.get("height", icons.get("height", 16))
    box = f"{icon.get('left', icons.get('left', 0))} {icon.get('top', icons.get('top', 0))} {width} {height}"
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}">{icon["body"]}</svg>'
    png = resvg_py.svg_to_bytes(svg_string=svg, width=side, height=side)
    return _on_white(Image.open(io.BytesIO(bytes(png))))


def write_emoji_styles(style_tgzs: dict[str, str], emoji_tgz: str, out: str) -> int:
    root = os.path.join(out, "emoji-styles")
    if os.path.exists(os.path.join(root, ".complete")):
        return 0
    with tarfile.open(emoji_tgz) as tf:
        entries = emoji_entries(tf)
    by_code = {}
    by_name = {}
    for e, sub, split in entries:
        for code in (e["unified"], e.get("non_qualified")):
            if code:
                by_code[code.lower()] = (sub, split)
        for name in [e.get("name") or "", *e.get("short_names", [])]:
            by_name.setdefault(_name_key(name), (sub, split))
    written = 0
    for style, tgz in sorted(style_tgzs.items()):
        with tarfile.open(tgz) as tf:
            icons = json.load(tf.extractfile("package/icons.json"))
            names_of = {name: code for code, name in json.load(tf.extractfile("package/chars.json")).items()}
        for name in sorted(icons["icons"]):
            match = by_code.get(names_of[name].lower()) if name in names_of else None
            match = match or by_name.get(_name_key(name))
            if match is None:
                continue  # not an emoji of emoji-datasource (flags, skin tones, extras)
            sub, split = match
            if style == STYLE_HELD_OUT:
                split = f"heldout-{style}"
            elif split != "train":
                continue
            folder = os.path.join(root, split, sub)
            os.makedirs(folder, exist_ok=True)
            render_icon(icons, name, EMOJI_SIDE).save(os.path.join(folder, f"{style}__{name}.png"))
            written += 1
    open(os.path.join(root, ".complete"), "w").close()
    return written


# Material Design Icons: every icon of the package's categories that name things (animals, plants,
# food, vehicles, tools, sport ...), not those of user-interface actions, file types or brands. An
# icon listed in several categories belongs to the first of this order; the label is the category's
# slug ("Food / Drink" -> "food-drink"). Drawn black on white, one size.
ICON_CATEGORIES = ("Animal", "Nature", "Food / Drink", "Agriculture", "Sport", "Clothing", "Holiday",
                   "Medical / Hospital", "Music", "Weather", "Places", "Hardware / Tools",
                   "Transportation + Road", "Transportation + Other", "Transportation + Flying",
                   "Transportation + Water", "Automotive", "Science", "Gaming / RPG", "People / Family",
                   "Shopping", "Home Automation", "Drawing / Art", "Religion", "Health / Beauty")
ICON_SIDE = 96


def icon_label(category: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-")


def write_icons(icons_tgz: str, out: str) -> int:
    root = os.path.join(out, "icons")
    if os.path.exists(os.path.join(root, ".complete")):
        return 0
    with tarfile.open(icons_tgz) as tf:
        icons = json.load(tf.extractfile("package/icons.json"))
        categories = json.load(tf.extractfile("package/metadata.json"))["categories"]
    seen: set[str] = set()
    for category in ICON_CATEGORIES:
        folder = os.path.join(root, icon_label(category))
        for name in sorted(categories[category]):
            if name in seen or name not in icons["icons"]:  # listed before, or an alias
                continue
            seen.add(name)
            os.makedirs(folder, exist_ok=True)
            render_icon(icons, name, ICON_SIDE).save(os.path.join(folder, f"{name}.png"))
    open(os.path.join(root, ".complete"), "w").close()
    return len(seen)


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
    return _on_white(img)


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


# One random-resized crop of each training picture, as the augmentation of ImageNet training draws it:
# a share of the area and an aspect ratio (else, after ten tries, the whole picture), mirrored half the
# time. Stored, so that a cached teacher row describes exactly the view the student sees.
CROP_AREA = (0.35, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
CROP_SEED = 7


def random_crop(img: Image.Image, rng: random.Random) -> Image.Image:
    w, h = img.size
    for _ in range(10):
        area = rng.uniform(*CROP_AREA) * w * h
        ratio = rng.uniform(*CROP_ASPECT)
        cw, ch = round((area * ratio) ** 0.5), round((area / ratio) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw, ch = w, h
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = img.crop((x, y, x + cw, y + ch))
    return ImageOps.mirror(crop) if rng.random() < 0.5 else crop


def write_clipart_crops(out: str) -> int:
    """One crop of every training clip-art picture, under openclipart-crops/<subject>/ (same order and
    seed every run, so the same crops)."""
    src, root = os.path.join(out, "openclipart", "train"), os.path.join(out, "openclipart-crops")
    if os.path.exists(os.path.join(root, ".complete")):
        return 0
    rng = random.Random(CROP_SEED)
    written = 0
    for subject in sorted(os.listdir(src)):
        os.makedirs(os.path.join(root, subject), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(src, subject))):
            with Image.open(os.path.join(src, subject, name)) as img:
                crop = random_crop(img.convert("RGB"), rng)
            crop.save(os.path.join(root, subject, name.rsplit(".", 1)[0] + "_c0.png"))
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
    n += write_clipart(src["openclipart"], args.out) + write_emoji_styles(src["emoji_styles"], src["emoji"], args.out)
    n += write_clipart_crops(args.out) + write_icons(src["icons"], args.out)
    print(f"wrote {n} images under {args.out}")


if __name__ == "__main__":
    main()
