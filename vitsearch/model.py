"""The shared ViT core: a transformers image tower that turns pixels into L2-normalised CLS embeddings.

Every command (index, query, train, serve) goes through :func:`vitsearch.checkpoint.load_spec` and
:class:`VitBackbone`, so the same image always gives the same vector.
"""

from __future__ import annotations

import copy

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
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report is ours to judge, below
    try:
        model, info = cls.from_pretrained(spec.path, dtype=torch.float32, output_loading_info=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for bad checkpoints
        raise ModelError(f"cannot load model {spec.name!r}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    # A pooler head is unused (the embedding is the CLS token); any other missing weight is an error.
    missing = [k for k in info.get("missing_keys", ()) if "pooler" not in k and "head" not in k]
    if missing:
        raise ModelError(f"model {spec.name!r} lacks weights the image tower needs: {', '.join(sorted(missing)[:5])}")
    if hasattr(model, "vision_model") and family["class"] == "AutoModel":
        model = model.vision_model
    return VitBackbone(model, family["output"]).eval()


# Sizes for training a ViT from random initialisation, as data (one builder below).
SCRATCH_PRESETS: dict[str, dict] = {
    "tiny": {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768},
    "small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}


def _vision_config(model: nn.Module):
    config = model.config
    return getattr(config, "vision_config", None) or config


def patch_size(backbone: VitBackbone) -> int:
    size = _vision_config(backbone.model).patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def native_image_size(backbone: VitBackbone) -> int:
    size = _vision_config(backbone.model).image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def resize_backbone(backbone: VitBackbone, image_size: int) -> VitBackbone:
    """The same weights for ``image_size`` inputs: position embeddings resampled to the new patch grid."""
    from .surgery import resize_position_embeddings

    patch = patch_size(backbone)
    if image_size % patch:
        lower, upper = image_size // patch * patch, (image_size // patch + 1) * patch
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch} (try {lower or upper} or {upper})")
    old = native_image_size(backbone)
    if old // patch == image_size // patch:
        return backbone
    model = backbone.model
    config = copy.deepcopy(model.config)
    config.image_size = image_size
    state = resize_position_embeddings(model.state_dict(), old // patch, image_size // patch)
    kwargs = {}
    if getattr(model, "pooler", "absent") is None:  # ViTModel built without its unused pooler
        kwargs["add_pooling_layer"] = False
    resized = type(model)(config, **kwargs)
    resized.load_state_dict(state)
    return VitBackbone(resized.to(next(model.parameters()).dtype), backbone.output).train(backbone.training)


def scratch_backbone(preset: str, image_size: int, patch: int = 16) -> VitBackbone:
    """A randomly initialised ViT (transformers ``ViTModel``) of a named size."""
    from transformers import ViTConfig, ViTModel

    if preset not in SCRATCH_PRESETS:
        raise ValueError(f"unknown size {preset!r}; valid: {', '.join(SCRATCH_PRESETS)}")
    if image_size % patch:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
    config = ViTConfig(
        image_size=image_size, patch_size=patch, layer_norm_eps=1e-6, qkv_bias=True, **SCRATCH_PRESETS[preset]
    )
    return VitBackbone(ViTModel(config, add_pooling_layer=False), "cls")


def save_backbone(backbone: VitBackbone, out: str, dtype: torch.dtype = torch.float32) -> None:
    """Write the image tower as a ``save_pretrained`` directory (config.json + model.safetensors)."""
    model = backbone.model
    if not hasattr(model, "save_pretrained"):
        raise ModelError(f"{type(model).__name__} cannot be saved with save_pretrained")
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"cannot save in {dtype}: {bad[0]} overflows it (save in float32 instead)")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.config.dtype = str(dtype).removeprefix("torch.")
    model.save_pretrained(out, state_dict=state)  # safetensors by default
