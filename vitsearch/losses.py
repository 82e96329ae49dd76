"""Training objectives on L2-normalised CLS embeddings, as small modules.

* ``normsoftmax`` — a softmax over cosine similarities to one learned proxy per class, with a
  temperature (Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning", 2019).
  Works with any batch size and any number of classes; the proxies are dropped at save.
* ``supcon`` — supervised contrastive (Khosla et al., 2020): same-class images in the batch are
  positives. Needs several images per class in a batch.
* ``infonce`` — for unlabelled images: two random views of an image are positives, every other
  view in the batch a negative (SimCLR's NT-Xent).
* ``SimilarityDistillation`` — the student's neighbourhoods follow a teacher's: for each view, the
  softmax over its similarities to the other views of the batch is pulled towards the teacher's
  (KL divergence), as in relational / similarity-preserving distillation (Park et al. 2019, "RKD";
  Tung & Mori 2019). It needs no head, so the CLS token itself learns what the teacher knows,
  whatever the teacher's width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError
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
        raise UsageError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    t = TEMPERATURES[name] if temperature is None else temperature
    if t <= 0:
        raise UsageError(f"temperature must be positive, not {t}")
    if name == "normsoftmax":
        return NormSoftmax(dim, classes, t)
    return SupCon(t) if name == "supcon" else InfoNCE(t)


class SimilarityDistillation(nn.Module):
    """KL(teacher ‖ student) between the row-softmaxes of the two batch similarities, over *other* images.

    Teacher features are centred on the batch mean before the cosine (post-ReLU CNN features are all
    positive, so their raw cosines crowd near 1). ``images`` names the image each row comes from: a
    view's own image (itself and its sibling view) is left out of both softmaxes. The teacher's rows
    of two views of one image are the same row, so the sibling would otherwise take nearly all of a
    sharp teacher's mass and the term would repeat the instance term instead of passing on the
    teacher's neighbourhoods.

    ``bank`` (a :class:`NeighbourBank`) adds the images of earlier steps as neighbours: each view's
    softmax then runs over its batch and the bank, whose student embeddings are detached (a queue, as
    in MoCo; relational distillation against a queue as in CompRess/SEED). The bank's teacher rows
    are centred on the batch mean too.
    """

    def __init__(self, temperature: float = 0.1, teacher_temperature: float = 0.05):
        super().__init__()
        self.temperature, self.teacher_temperature = temperature, teacher_temperature

    def forward(self, z: torch.Tensor, teacher: torch.Tensor, images: torch.Tensor | None = None,
                bank: NeighbourBank | None = None) -> torch.Tensor:
        n = z.shape[0]
        if images is None:
            images = torch.arange(n, device=z.device)
        z = F.normalize(z, dim=-1)
        centre = teacher.mean(0, keepdim=True)
        t = F.normalize(teacher - centre, dim=-1)
        others_z, others_t, others_images = z, t, images
        if bank is not None and len(bank):
            bank_z, bank_t, bank_images = bank.contents()
            others_z = torch.cat([z, bank_z.to(z.dtype)])
            others_t = torch.cat([t, F.normalize(bank_t.to(t.dtype) - centre, dim=-1)])
            others_images = torch.cat([images, bank_images])
        same = images[:, None] == others_images[None, :]
        if (~same).sum(1).min() < 2:  # some view has fewer than two rows of other images: nothing to match
            return z.sum() * 0.0
        student = (z @ others_z.T / self.temperature).masked_fill(same, -float("inf")).log_softmax(1)
        target = (t @ others_t.T / self.teacher_temperature).masked_fill(same, -float("inf")).softmax(1)
        return (target * (target.clamp_min(1e-12).log() - student.masked_fill(same, 0.0))).sum(1).mean()


class NeighbourBank:
    """The last ``size`` distilled views of earlier steps: detached, normalised student embeddings,
    their (raw) teacher rows and image ids, for :class:`SimilarityDistillation`. Not saved in a
    checkpoint: a resumed run refills it within ``size`` views."""

    def __init__(self, size: int):
        self.size = size
        self.z = self.teacher = self.images = None

    def __len__(self) -> int:
        return 0 if self.z is None else len(self.z)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.z, self.teacher, self.images

    @torch.no_grad()
    def push(self, z: torch.Tensor, teacher: torch.Tensor, images: torch.Tensor) -> None:
        z = F.normalize(z.detach().float(), dim=-1)
        teacher, images = teacher.detach().float(), images.detach()
        if self.z is not None:
            z, teacher = torch.cat([z, self.z]), torch.cat([teacher, self.teacher])
            images = torch.cat([images, self.images])
        self.z, self.teacher, self.images = z[: self.size], teacher[: self.size], images[: self.size]
