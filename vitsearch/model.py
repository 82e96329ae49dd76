"""The shared ViT core: a transformers image tower that turns pixels into L2-normalised CLS embeddings.

Every command (index, query, train, serve) goes through :func:`vitsearch.checkpoint.load_spec` and
:class:`VitBackbone`, so the same image always gives the same vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import FAMILIES, ModelSpec, load_spec  # noqa: F401 - re-exported
from .errors import ModelError


class VitBackbone(nn.Module):
    """A transformers image tower that returns the L2-normalised final CLS token, in float32."""

    def __init__(self, model: nn.Module, output: str = "cls"):
        super().__init__()
        self.model = model
        self.output = output

    def cls_token(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        if self.output == "pooler_output":
            return out.pooler_output
        return out.last_hidden_state[:, 0]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.cls_token(pixel_values).float(), dim=-1)


def load_backbone(spec: ModelSpec) -> VitBackbone:
    """Build the image tower of ``spec`` in float32, in eval mode."""
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    family = FAMILIES.get(spec.model_type, {"class": "AutoModel", "output": "cls"})
    cls = getattr(transformers, family["class"])
    kwargs = dict(family.get("config", {}))
    try:
        model = cls.from_pretrained(spec.path, dtype=torch.float32, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for bad checkpoints
        raise ModelError(f"cannot load model {spec.name!r}: {exc}") from exc
    if hasattr(model, "vision_model") and family["class"] == "AutoModel":
        model = model.vision_model
    return VitBackbone(model, family["output"]).eval()
