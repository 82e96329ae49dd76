"""Augmentations: random views for training (kornia, batched on the model's device) and the fixed
edits that near-duplicate evaluation applies to files (PIL, so that a JPEG copy is a real re-encode).
"""

from __future__ import annotations

import io
import random
from typing import Callable

import torch
from PIL import Image, ImageEnhance, ImageOps

# Two recipes: "light" for supervised fine-tuning (labels carry the signal, views stay close to the
# photo), "strong" for self-supervised training (SimCLR's lesson: crops and colour are the signal).
RECIPES: dict[str, dict] = {
    "light": {"scale": (0.35, 1.0), "jitter": (0.3, 0.3, 0.2, 0.05), "jitter_p": 0.5, "gray_p": 0.1},
    "strong": {"scale": (0.2, 1.0), "jitter": (0.4, 0.4, 0.4, 0.1), "jitter_p": 0.8, "gray_p": 0.2},
}


def train_views(image_size: int, recipe: str = "light") -> torch.nn.Module:
    """A module mapping float [0, 1] NCHW batches to random views of ``image_size`` × ``image_size``."""
    import kornia.augmentation as K

    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    r = RECIPES[recipe]
    return torch.nn.Sequential(
        K.RandomResizedCrop((image_size, image_size), scale=r["scale"], resample="BICUBIC", align_corners=False),
        K.RandomHorizontalFlip(),
        K.ColorJitter(*r["jitter"], p=r["jitter_p"]),
        K.RandomGrayscale(p=r["gray_p"]),
    )


def _crop(img: Image.Image, rng: random.Random) -> Image.Image:
    w, h = img.size
    keep = rng.uniform(0.7, 0.85)  # of each side: 50-70 % of the area
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((left, top, left + cw, top + ch))


def _rotate(img: Image.Image, rng: random.Random) -> Image.Image:
    angle = rng.choice((-1, 1)) * rng.uniform(5, 15)
    return img.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=img.getpixel((0, 0)))


def _jpeg(img: Image.Image, rng: random.Random) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(15, 35))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def _jitter(img: Image.Image, rng: random.Random) -> Image.Image:
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(0.6, 1.4))
    return img


def _grayscale(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageOps.grayscale(img).convert("RGB")


def _downscale(img: Image.Image, rng: random.Random) -> Image.Image:
    scale = rng.uniform(0.25, 0.5)
    w, h = img.size
    return img.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.BILINEAR)


# The edits of `vitsearch eval --near-dup`: each copy is its original changed in one way.
NEAR_DUP_EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "crop": _crop,
    "rotate": _rotate,
    "jpeg": _jpeg,
    "jitter": _jitter,
    "grayscale": _grayscale,
    "downscale": _downscale,
}
