"""Augmentations: random views for training (kornia, batched on the model's device) and the fixed
edits that near-duplicate evaluation applies to files (PIL, so that a JPEG copy is a real re-encode).
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import torch
from PIL import Image, ImageEnhance, ImageOps

from .errors import UsageError

# "light" for supervised fine-tuning (labels carry the signal, views stay close to the photo),
# "strong" for self-supervised training (SimCLR's lesson: crops and colour are the signal), "robust"
# for general-purpose encoders that must also find edited copies: strong, plus the other edits that
# copies of an image go through (a small rotation, a lower resolution, blur); "copies" goes further
# for near-duplicate search: deeper downscales, JPEG compression at the low resolution and at full size.
RECIPES: dict[str, dict] = {
    "light": {"scale": (0.35, 1.0), "jitter": (0.3, 0.3, 0.2, 0.05), "jitter_p": 0.5, "gray_p": 0.1},
    "strong": {"scale": (0.2, 1.0), "jitter": (0.4, 0.4, 0.4, 0.1), "jitter_p": 0.8, "gray_p": 0.2},
    "robust": {"scale": (0.2, 1.0), "jitter": (0.4, 0.4, 0.4, 0.1), "jitter_p": 0.8, "gray_p": 0.2,
               "rotate_p": 0.3, "downscale_p": 0.3, "blur_p": 0.1},
    "copies": {"scale": (0.2, 1.0), "jitter": (0.4, 0.4, 0.4, 0.1), "jitter_p": 0.8, "gray_p": 0.2,
               "rotate_p": 0.3, "degrade_p": 0.4, "jpeg_p": 0.2, "blur_p": 0.1},
}


class RandomDownscale(torch.nn.Module):
    """With probability ``p`` per image, shrink to 25-60 % of its side and scale back up (lost detail)."""

    def __init__(self, p: float, low: float = 0.25, high: float = 0.6):
        super().__init__()
        self.p, self.low, self.high = p, low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pick = torch.rand(x.shape[0], device=x.device) < self.p
        if not pick.any():
            return x
        x = x.clone()
        for i in torch.nonzero(pick).flatten().tolist():
            f = self.low + (self.high - self.low) * torch.rand(()).item()
            small = torch.nn.functional.interpolate(x[i : i + 1], scale_factor=f, mode="bilinear", antialias=True)
            x[i : i + 1] = torch.nn.functional.interpolate(small, size=size, mode="bilinear")
        return x


class RandomDegrade(torch.nn.Module):
    """A re-encoded thumbnail: with probability ``p`` per image, shrink to 15-60 % of the side,
    JPEG-compress at that size (quality 15-60, per image) with probability ``jpeg_p``, scale back up.

    One shrink factor per call for all the chosen images: kornia's JPEG has a large fixed cost per
    call on a CPU whatever the batch (docs/training.md), so it runs once per batch, not once per image.
    """

    def __init__(self, p: float, jpeg_p: float = 0.5, quality: tuple[float, float] = (15.0, 60.0),
                 low: float = 0.15, high: float = 0.6):
        super().__init__()
        self.p, self.jpeg_p, self.quality, self.low, self.high = p, jpeg_p, quality, low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.enhance import jpeg_codec_differentiable

        pick = torch.nonzero(torch.rand(x.shape[0], device=x.device) < self.p).flatten()
        if not len(pick):
            return x
        f = self.low + (self.high - self.low) * torch.rand(()).item()
        small = torch.nn.functional.interpolate(x[pick], scale_factor=f, mode="bilinear", antialias=True).clamp(0, 1)
        jpeg = torch.nonzero(torch.rand(small.shape[0], device=x.device) < self.jpeg_p).flatten()
        if len(jpeg):
            q = self.quality[0] + (self.quality[1] - self.quality[0]) * torch.rand(len(jpeg), device=x.device)
            small = small.clone()
            small[jpeg] = jpeg_codec_differentiable(small[jpeg], q)
        x = x.clone()
        x[pick] = torch.nn.functional.interpolate(small, size=x.shape[-2:], mode="bilinear")
        return x


def train_views(image_size: int, recipe: str = "light") -> torch.nn.Module:
    """A module mapping float [0, 1] NCHW batches to random views of ``image_size`` × ``image_size``."""
    import kornia.augmentation as K

    if recipe not in RECIPES:
        raise UsageError(f"unknown augmentation recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    r = RECIPES[recipe]
    steps = [
        K.RandomResizedCrop((image_size, image_size), scale=r["scale"], resample="BICUBIC", align_corners=False),
        K.RandomHorizontalFlip(),
        K.ColorJitter(*r["jitter"], p=r["jitter_p"]),
        K.RandomGrayscale(p=r["gray_p"]),
    ]
    if r.get("rotate_p"):
        steps.append(K.RandomRotation(15.0, p=r["rotate_p"]))
    if r.get("downscale_p"):
        steps.append(RandomDownscale(r["downscale_p"]))
    if r.get("degrade_p"):
        steps.append(RandomDegrade(r["degrade_p"]))
    if r.get("jpeg_p"):
        steps.append(K.RandomJPEG(jpeg_quality=(15.0, 60.0), p=r["jpeg_p"]))
    if r.get("blur_p"):
        steps.append(K.RandomGaussianBlur((5, 5), (0.1, 1.5), p=r["blur_p"]))
    if len(steps) > 4:
        steps.append(torch.nn.Hardtanh(0.0, 1.0))  # bicubic rotation overshoots [0, 1]
    return torch.nn.Sequential(*steps)


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
