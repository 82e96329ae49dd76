"""The shared ViT core as every command uses it: load a checkpoint, resize it, save it.

ViT, DeiT and DINOv2 checkpoints run on vitsearch's own plain-torch transformer (:mod:`vitsearch.vit`),
loaded without importing transformers; other families (CLIP's vision tower, BEiT ...) load with
transformers, chosen from ``config.json``. Every command (index, query, serve, eval, train) goes
through :func:`vitsearch.checkpoint.load_spec` and :class:`VitBackbone`, so the same image always
gives the same vector; :func:`save_model` writes the directory they read (training and the
conversion scripts save through it alone).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import vit
from .checkpoint import FAMILIES, ModelSpec, load_spec, write_json, write_record  # load_spec also re-exported
from .errors import ModelError, UsageError
from .preprocess import Preprocessing

# How each kind of tower gives the final CLS token after its final norm (as data).
OUTPUTS = {
    "core": lambda model, x: model(x),  # vitsearch's own ViT returns it
    "cls": lambda model, x: model(pixel_values=x).last_hidden_state[:, 0],
    "pooler_output": lambda model, x: model(pixel_values=x).pooler_output,
}


class VitBackbone(nn.Module):
    """An image tower that returns the L2-normalised final CLS token, in float32."""

    def __init__(self, model: nn.Module, output: str = "cls"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; valid: {', '.join(OUTPUTS)}")
        self.model = model
        self.output = output

    def cls_token(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return OUTPUTS[self.output](self.model, pixel_values)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.cls_token(pixel_values).float(), dim=-1)


def load_backbone(spec: ModelSpec) -> VitBackbone:
    """Build the image tower of ``spec`` in float32, in eval mode, for its preprocessing's input size.

    ViT, DeiT and DINOv2 load into the built-in core (position table resampled once to the input
    grid); any other family loads with transformers.
    """
    config = vit.read_config(spec.path)
    if config is not None:
        model = vit.from_pretrained(spec.path, image_size=spec.preprocessing.input_size, config=config)
        return VitBackbone(model, "core").eval()
    return _load_transformers(spec)


def _load_transformers(spec: ModelSpec) -> VitBackbone:
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
    except Exception as exc:  # transformers raises many types for bad checkpoints
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
        raise UsageError(f"image size {image_size} is not a multiple of the patch size {patch} (try {lower or upper} or {upper})")
    model = backbone.model
    if isinstance(model, vit.VisionTransformer):
        if model.config.grid == (image_size // patch,) * 2:
            return backbone
        return VitBackbone(vit.resized(model, image_size), backbone.output)
    old = native_image_size(backbone)
    if old // patch == image_size // patch:
        return backbone
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
    """A randomly initialised ViT of a named size (the built-in core; saved as a transformers ``ViTModel``)."""
    if preset not in SCRATCH_PRESETS:
        raise UsageError(f"unknown size {preset!r}; valid: {', '.join(SCRATCH_PRESETS)}")
    if image_size % patch:
        raise UsageError(f"image size {image_size} is not a multiple of the patch size {patch}")
    model = vit.init_weights(vit.VisionTransformer(vit.scratch_config(SCRATCH_PRESETS[preset], image_size, patch)))
    return VitBackbone(model, "core")


def save_backbone(backbone: VitBackbone, out: str, dtype: torch.dtype = torch.float32) -> None:
    """Write the image tower as a ``save_pretrained`` directory (config.json + model.safetensors)
    that transformers' ``AutoModel.from_pretrained`` and every vitsearch command load."""
    model = backbone.model
    core = isinstance(model, vit.VisionTransformer)
    if not core and not hasattr(model, "save_pretrained"):
        raise ModelError(f"{type(model).__name__} cannot be saved with save_pretrained")
    state = vit.checkpoint_state(model) if core else model.state_dict()
    def not_finite(tensors: dict) -> str | None:
        return next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)

    if bad := not_finite(state):
        raise ModelError(f"cannot save the model: {bad} holds NaN or infinite values (did training diverge?)")
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in state.items()}
    if bad := not_finite(state):  # finite before the cast: too large for ``dtype``
        raise ModelError(f"cannot save in {dtype}: {bad} overflows it (save in float32 instead)")
    if core:
        vit.save_pretrained(model, out, state, dtype)
    else:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model.save_pretrained(out, state_dict=state)  # safetensors by default
        # transformers names the dtype of the model in memory (float32), not of the weights it wrote
        config = Path(out) / "config.json"
        write_json(config, vit.with_dtype(json.loads(config.read_text(encoding="utf-8")), dtype))
    # safetensors writes owner-only files (0600): give them the umask's usual mode, like every other file
    # here, so that another user (a container's) can read a model folder it is given
    umask = os.umask(0)
    os.umask(umask)
    for weights in Path(out).glob("*.safetensors"):
        os.chmod(weights, 0o666 & ~umask)


def save_model(
    backbone: VitBackbone,
    out: str | os.PathLike,
    preprocessing: Preprocessing,
    *,
    record: dict | None = None,
    dtype: torch.dtype = torch.float32,
    licence: str | os.PathLike | None = None,
) -> ModelSpec:
    """Write a model directory that :func:`load_spec` and :func:`load_backbone` read back as it was
    (the mirror of loading), and return its spec.

    The directory holds the weights and ``config.json`` in transformers' layout
    (:func:`save_backbone`, so ``AutoModel.from_pretrained`` loads it too), ``preprocessor_config.json``
    for ``preprocessing``, and the vitsearch record (``vitsearch.json``: ``record`` and this
    vitsearch's version); ``licence`` is copied in as ``LICENSE`` when given.
    """
    out = Path(out)
    save_backbone(backbone, str(out), dtype)
    write_json(out / "preprocessor_config.json", preprocessing.to_config())
    write_record(out, record or {})
    if licence is not None:
        shutil.copyfile(licence, out / "LICENSE")
    return load_spec(str(out))
