"""The checkpoint's image-processor config, applied fast with PIL on uint8 pictures.

Resize and crop follow transformers' image processors exactly (same sizes, same PIL resampling on
8-bit data, same crop offsets); rescale and normalise run later, batched, on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .errors import ModelError

_STANDARD = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
_CLIP = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
_SHORT_CROP = {"size": {"shortest_edge": 224}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}}
# What each transformers image processor assumes for keys its saved config leaves out (as data).
PROCESSOR_DEFAULTS: dict[str, dict] = {
    "ViTImageProcessor": {**_STANDARD, "size": {"height": 224, "width": 224}, "resample": 2},
    "DeiTImageProcessor": {**_STANDARD, "size": {"height": 256, "width": 256}, "resample": 3,
                           "do_center_crop": True, "crop_size": {"height": 224, "width": 224}},
    "BeitImageProcessor": {**_STANDARD, "size": {"height": 224, "width": 224}, "resample": 3},
    "BitImageProcessor": {**_CLIP, **_SHORT_CROP, "resample": 3},
    "CLIPImageProcessor": {**_CLIP, **_SHORT_CROP, "resample": 3},
}


@dataclass(frozen=True)
class Preprocessing:
    shortest_edge: int | None  # resize so that the short side has this length (aspect kept)
    longest_edge: int | None  # with shortest_edge: cap on the long side
    height: int | None  # or resize to exactly height x width
    width: int | None
    resample: int
    crop: tuple[int, int] | None  # (height, width) of the centre crop
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: dict) -> Preprocessing:
        """Build from a ``preprocessor_config.json`` dict (ViT, DeiT, BEiT, DINOv2/BiT, CLIP processors)."""
        kind = str(cfg.get("image_processor_type", "ViTImageProcessor")).removesuffix("Fast").removesuffix("Pil")
        cfg = {**PROCESSOR_DEFAULTS.get(kind, PROCESSOR_DEFAULTS["ViTImageProcessor"]), **cfg}
        size = cfg.get("size") if cfg.get("do_resize", True) else None
        if isinstance(size, int):
            size = {"height": size, "width": size} if cfg.get("default_to_square", True) else {"shortest_edge": size}
        shortest = longest = height = width = None
        if size:
            if "shortest_edge" in size:
                shortest, longest = int(size["shortest_edge"]), size.get("longest_edge")
                longest = int(longest) if longest else None
            elif "height" in size and "width" in size:
                height, width = int(size["height"]), int(size["width"])
            else:
                raise ModelError(f"unsupported image-processor size {size}")
        crop = None
        if cfg.get("do_center_crop", False):
            cs = cfg.get("crop_size", 224)
            crop = (int(cs), int(cs)) if isinstance(cs, int) else (int(cs["height"]), int(cs["width"]))
        mean = tuple(cfg["image_mean"]) if cfg.get("do_normalize", True) else (0.0, 0.0, 0.0)
        std = tuple(cfg["image_std"]) if cfg.get("do_normalize", True) else (1.0, 1.0, 1.0)
        if len(mean) == 1:
            mean, std = mean * 3, std * 3
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        return cls(shortest, longest, height, width, int(cfg.get("resample", 2)), crop, rescale, mean, std)

    def at_size(self, size: int) -> Preprocessing:
        """The same recipe for a model that takes ``size`` × ``size`` inputs (resize margin kept)."""
        if size < 1:
            raise ValueError(f"image size must be positive, not {size}")
        if self.shortest_edge and self.crop:
            edge = round(size * self.shortest_edge / min(self.crop))
            return replace(self, shortest_edge=edge, longest_edge=None, crop=(size, size))
        if self.shortest_edge:
            return replace(self, shortest_edge=size, longest_edge=None, crop=(size, size))
        crop = (size, size) if self.crop else None
        if self.crop and self.height:
            scale = size / min(self.crop)
            return replace(self, height=round(self.height * scale), width=round(self.width * scale), crop=crop)
        return replace(self, height=size, width=size, crop=crop)

    def whole(self) -> Preprocessing:
        """The whole picture squashed to the input size: no aspect-keeping resize, no centre crop.

        Nothing at the edges is cut off (a bottle's neck, a logo in a corner), at the price of
        stretching pictures that are far from square.
        """
        height, width = self.input_size
        return replace(self, shortest_edge=None, longest_edge=None, height=height, width=width, crop=None)

    def to_config(self) -> dict:
        """A ``preprocessor_config.json`` that transformers' image processors and :meth:`from_config` read alike."""
        cfg: dict = {"do_resize": True, "resample": self.resample, "do_convert_rgb": True}
        if self.shortest_edge:
            cfg["image_processor_type"] = "BitImageProcessor"
            cfg["size"] = {"shortest_edge": self.shortest_edge}
            if self.longest_edge:
                cfg["size"]["longest_edge"] = self.longest_edge
        else:
            cfg["image_processor_type"] = "DeiTImageProcessor" if self.crop else "ViTImageProcessor"
            cfg["size"] = {"height": self.height, "width": self.width}
        cfg["do_center_crop"] = bool(self.crop)
        if self.crop:
            cfg["crop_size"] = {"height": self.crop[0], "width": self.crop[1]}
        cfg.update(
            do_rescale=True,
            rescale_factor=self.rescale,
            do_normalize=True,
            image_mean=list(self.mean),
            image_std=list(self.std),
        )
        return cfg

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the tensors this produces (fixed unless there is neither crop nor exact size)."""
        if self.crop:
            return self.crop
        if self.height:
            return (self.height, self.width)
        raise ModelError("this preprocessing gives variable image sizes; batching needs a crop or an exact size")

    @property
    def draft_size(self) -> tuple[int, int]:
        """The least (width, height) a decoder must deliver so that no resolution is lost."""
        edge = self.shortest_edge or max(self.height or 0, self.width or 0) or max(self.input_size)
        return (edge, edge)

    def resized_shape(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step, by transformers' rules."""
        if self.shortest_edge:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            if self.longest_edge and new_long > self.longest_edge:
                new_short, new_long = int(self.longest_edge * new_short / new_long), self.longest_edge
            return (new_short, new_long) if width <= height else (new_long, new_short)
        if self.height:
            return (self.width, self.height)
        return (width, height)

    def to_uint8(self, img: Image.Image) -> np.ndarray:
        """An RGB picture -> resized, centre-cropped CHW uint8 array."""
        new_w, new_h = self.resized_shape(*img.size)
        if (new_w, new_h) != img.size:
            img = img.resize((new_w, new_h), resample=self.resample)
        arr = np.asarray(img, dtype=np.uint8)
        if self.crop:
            arr = _center_crop(arr, *self.crop)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def normalise_numpy(self, chw: np.ndarray) -> np.ndarray:
        """The float32 pixel values transformers would produce (for tests and single images)."""
        x = chw.astype(np.float32) * np.float32(self.rescale)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (x - mean) / std


def _center_crop(arr: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if h < crop_h or w < crop_w:  # pad with black, centred, like transformers
        out = np.zeros((max(h, crop_h), max(w, crop_w), arr.shape[2]), dtype=arr.dtype)
        top, left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
        out[top : top + h, left : left + w] = arr
        arr, h, w = out, out.shape[0], out.shape[1]
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return arr[top : top + crop_h, left : left + crop_w]
