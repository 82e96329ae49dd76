"""Training objectives on L2-normalised CLS embeddings, as small modules.

* ``normsoftmax`` — a softmax over cosine similarities to one learned proxy per class, with a
  temperature (Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning", 2019).
  Works with any batch size and any number of classes; the proxies are dropped at save.
* ``supcon`` — supervised contrastive (Khosla et al., 2020): same-class images in the batch are
  positives. Needs several images per class in a batch.
* ``infonce`` — for unlabelled images: two random views of an image are positives, every other
  view in the batch a negative (SimCLR's NT-Xent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .options import LOSSES
TEMPERATURES = {"normsoftmax": 0.05, "supcon": 0.1, "infonce": 0.1}


class NormSoftmax(nn.Module):
    def __init__(self, dim: int, classes: int, temperature: float = 0.05):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(classes, dim) / dim**0.5)
        self.temperature = temperature

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(z, dim=-1) @ F.normalize(self.proxies, dim=-1).T
        return F.cross_entropy(logits / self.temperature, labels)


class SupCon(nn.Module):
    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z = F.normalize(z, dim=-1)
        n = z.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = (z @ z.T / self.temperature).masked_fill(eye, -float("inf"))
        log_prob = logits.log_softmax(dim=1)
        positive = (labels[:, None] == labels[None, :]) & ~eye
        count = positive.sum(1)
        anchors = count > 0
        if not anchors.any():  # no pair in this batch: nothing to learn from it
            return z.sum() * 0.0
        mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1)[anchors] / count[anchors]
        return -mean_log_prob.mean()


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` holds two views: rows ``i`` and ``i + n/2`` come from the same image."""
        z = F.normalize(z, dim=-1)
        n = z.shape[0] // 2
        eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = (z @ z.T / self.temperature).masked_fill(eye, -float("inf"))
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, target)


def build_loss(name: str, dim: int, classes: int, temperature: float | None = None) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    t = temperature or TEMPERATURES[name]
    if t <= 0:
        raise ValueError(f"temperature must be positive, not {t}")
    if name == "normsoftmax":
        return NormSoftmax(dim, classes, t)
    return SupCon(t) if name == "supcon" else InfoNCE(t)
