"""Build ``sample_images/`` from offline packages (all licences allow redistribution).

    python scripts/make_sample_images.py [--cache /tmp/vitsearch-material] [--out sample_images]

Sources, fetched into the cache with the package managers this project is allowed to reach:
  * scikit-image's bundled photos (PyPI ``scikit-image``; public domain or CC0, see LICENSE.md)
  * Noto emoji artwork (npm ``emoji-datasource-google``; images Apache-2.0, package MIT)
  * Fashion-MNIST test items (Debian ``dataset-fashion-mnist``; MIT, Zalando SE)
and a few planted near-duplicates (crops, re-encodes, flips) so that a query shows something meaningful.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import zipfile

import numpy as np
from material import DEFAULT_CACHE, FASHION_CLASSES, fashion_split, fetch
from PIL import Image, ImageEnhance, ImageOps

# (file in skimage/data, licence note)
PHOTOS = {
    "astronaut.png": "public domain (NASA)",
    "camera.png": "CC0 (Lav Varshney)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "horse.png": "CC0 (Andreas Preuss)",
    "clock_motion.png": "public domain (Stefan van der Walt)",
    "hubble_deep_field.jpg": "public domain (NASA)",
    "retina.jpg": "CC0 1.0 (Mikael Häggström)",
    "rocket.jpg": "public domain (SpaceX)",
    "brick.png": "CC0 (CC0Textures)",
    "grass.png": "CC0 (CC0Textures)",
    "gravel.png": "CC0 (CC0Textures)",
    "coins.png": "no known copyright restrictions (Walters Art Museum)",
    "text.png": "public domain",
    "cell.png": "CC0",
    "microaneurysms.png": "CC0 (Andreas Maier)",
}
EMOJI_PER_CATEGORY = 4
FASHION_PER_CLASS = 3


def save_jpeg(img: Image.Image, path: str, quality: int = 88) -> None:
    img.convert("RGB").save(path, "JPEG", quality=quality, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--out", default="sample_images")
    args = parser.parse_args()
    src = fetch(args.cache)
    out = args.out
    for sub in ("photos", "emoji", "fashion", "near_duplicates"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    rows = []

    with zipfile.ZipFile(src["skimage"]) as zf:
        for name, licence in PHOTOS.items():
            img = Image.open(io.BytesIO(zf.read(f"skimage/data/{name}")))
            img.load()
            stem = os.path.splitext(name)[0]
            if max(img.size) > 800:
                img.thumbnail((800, 800), Image.LANCZOS)
            save_jpeg(img, os.path.join(out, "photos", stem + ".jpg"))
            rows.append((f"photos/{stem}.jpg", f"scikit-image `{name}`", licence))
            if stem in ("chelsea", "coffee", "astronaut", "rocket", "horse"):
                rgb = img.convert("RGB")
                w, h = rgb.size
                crop = rgb.crop((w // 10, h // 12, w - w // 12, h - h // 10))
                save_jpeg(crop, os.path.join(out, "near_duplicates", f"{stem}_crop.jpg"), quality=70)
                small = ImageEnhance.Brightness(rgb.resize((w // 2, h // 2), Image.BILINEAR)).enhance(1.15)
                small.save(os.path.join(out, "near_duplicates", f"{stem}_small_bright.png"))
                save_jpeg(ImageOps.mirror(rgb), os.path.join(out, "near_duplicates", f"{stem}_mirror.jpg"), quality=60)
                for kind in ("crop", "small_bright", "mirror"):
                    ext = "png" if kind == "small_bright" else "jpg"
                    rows.append((f"near_duplicates/{stem}_{kind}.{ext}", f"derived from scikit-image `{name}`", licence))

    with tarfile.open(src["emoji"]) as tf:
        meta = json.load(tf.extractfile("package/emoji.json"))
        by_cat: dict[str, list] = {}
        for e in sorted(meta, key=lambda e: e.get("sort_order", 0)):
            if e.get("has_img_google") and e["category"] not in ("Component", "Flags"):
                by_cat.setdefault(e["category"], []).append(e)
        for cat, items in sorted(by_cat.items()):
            step = max(1, len(items) // EMOJI_PER_CATEGORY)
            for e in items[::step][:EMOJI_PER_CATEGORY]:
                data = tf.extractfile(f"package/img/google/64/{e['image']}").read()
                slug = e["short_name"].replace("+1", "thumbsup").replace("-1", "thumbsdown").replace("-", "_")
                fname = f"{cat.split()[0].lower()}_{slug}.png"
                with open(os.path.join(out, "emoji", fname), "wb") as fh:
                    fh.write(data)
                rows.append((f"emoji/{fname}", f"Noto emoji `{e['image']}` via emoji-datasource-google", "Apache-2.0 (Google)"))

    images, labels = fashion_split(src["fashion"], "test")
    for cls, name in enumerate(FASHION_CLASSES):
        for n, i in enumerate(np.flatnonzero(labels == cls)[:FASHION_PER_CLASS]):
            fname = f"{name}_{n + 1}.png"
            Image.fromarray(255 - images[i], "L").save(os.path.join(out, "fashion", fname))
            rows.append((f"fashion/{fname}", f"Fashion-MNIST test item {i} (inverted to dark-on-white)", "MIT (Zalando SE)"))

    with open(os.path.join(out, "LICENSE.md"), "w", encoding="utf-8") as fh:
        fh.write("# Licences of the sample images\n\nMade by `scripts/make_sample_images.py` from offline packages. ")
        fh.write("Every file may be redistributed; derived files (crops, re-encodes) carry the licence of their source.\n\n")
        fh.write("| file | source | licence |\n|---|---|---|\n")
        for path, source, licence in sorted(rows):
            fh.write(f"| `{path}` | {source} | {licence} |\n")
    print(f"wrote {len(rows)} images to {out}")


if __name__ == "__main__":
    main()
