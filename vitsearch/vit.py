"""vitsearch's own Vision Transformer: the ViT, DeiT and DINOv2 image towers in plain torch.

One module serves every command (index, query, serve, eval, train). It reads a transformers
checkpoint (``config.json`` + safetensors, or ``pytorch_model.bin``) through a key map, without
importing transformers (most of a small CPU's start-up; see docs/core.md), and writes the same layout back, so what
``vitsearch train`` saves still loads with ``AutoModel.from_pretrained``. Families, their config
defaults and their key maps are data (:data:`FAMILIES`, :data:`LAYOUTS`); the forward pass has no
branch per family::

    tokens = [CLS, (DeiT: distillation), patches] + position table (resampled once, at load, to the input grid)
             with DINOv2's register tokens inserted after CLS (they have no position)
    block  = x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))   (pre-norm; LayerScale in DINOv2)
    output = norm(x)[:, 0]                                            (the final CLS token)

The last block computes the CLS token alone (:meth:`Block.forward_first`): the other tokens are its
keys and values but skip its queries, projection and MLP, the same vector for about 7 % less work.

Attention is ``torch.nn.functional.scaled_dot_product_attention`` with one fused qkv projection.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelError
from .surgery import resample_position_embeddings

# -- families, as data ----------------------------------------------------------------------------
# config.json defaults of each transformers config class (older configs leave defaults out)
_VIT_DEFAULTS = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "layer_norm_eps": 1e-12,
    "image_size": 224, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
}
_DINOV2_DEFAULTS = {
    **{k: v for k, v in _VIT_DEFAULTS.items() if k != "intermediate_size"},
    "mlp_ratio": 4, "layer_norm_eps": 1e-6, "patch_size": 14, "layerscale_value": 1.0, "drop_path_rate": 0.0,
    "use_swiglu_ffn": False,
}
# model_type -> what the core needs to know: the transformers class it stands for (written into a
# saved config.json), the prefix its task models put before the tower's weights, the block layout,
# the extra tokens, and how the position table is resampled.
FAMILIES: dict[str, dict] = {
    "vit": {"architecture": "ViTModel", "prefix": "vit.", "layout": "vit", "defaults": _VIT_DEFAULTS},
    "deit": {"architecture": "DeiTModel", "prefix": "deit.", "layout": "vit", "defaults": _VIT_DEFAULTS,
             "distillation_token": True},
    "dinov2": {"architecture": "Dinov2Model", "prefix": "dinov2.", "layout": "dinov2", "defaults": _DINOV2_DEFAULTS},
    "dinov2_with_registers": {
        "architecture": "Dinov2WithRegistersModel", "prefix": "dinov2_with_registers.", "layout": "dinov2",
        "defaults": {**_DINOV2_DEFAULTS, "patch_size": 16, "num_register_tokens": 4}, "antialias": True,
    },
}

# Key maps: the core's names -> the checkpoint's (transformers' on-disk layout, which 4.x and 5.x
# both read and write). A tuple is fused along dim 0 on load (q, k, v -> qkv) and split on save.
# Block keys are relative to ``layers.{i}.`` / ``encoder.layer.{i}.``; the first matching prefix wins.
_QKV = ("attention.attention.query.", "attention.attention.key.", "attention.attention.value.")
TOP_KEYS = {"embeddings.patch_embed.": "embeddings.patch_embeddings.projection.", "norm.": "layernorm."}
_DINOV2_KEYS = {
    "norm1.": "norm1.", "attn.qkv.": _QKV, "attn.proj.": "attention.output.dense.", "ls1.gamma": "layer_scale1.lambda1",
    "norm2.": "norm2.", "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.", "ls2.gamma": "layer_scale2.lambda1",
}
LAYOUTS: dict[str, dict] = {
    "vit": {
        "mlp": "intermediate_size", "layerscale": False,
        "keys": {"norm1.": "layernorm_before.", "attn.qkv.": _QKV, "attn.proj.": "attention.output.dense.",
                 "norm2.": "layernorm_after.", "mlp.fc1.": "intermediate.dense.", "mlp.fc2.": "output.dense."},
    },
    "dinov2": {"mlp": "mlp_ratio", "layerscale": True, "keys": _DINOV2_KEYS},
    "dinov2_swiglu": {  # DINOv2-g: fc1 holds the gate and the up projection, stacked
        "mlp": "mlp_ratio", "layerscale": True, "swiglu": True,
        "keys": {**_DINOV2_KEYS, "mlp.fc1.": "mlp.weights_in.", "mlp.fc2.": "mlp.weights_out."},
    },
}


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {
    "gelu": F.gelu, "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh, "gelu_fast": _gelu_tanh,
    "quick_gelu": _quick_gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu,
}


@dataclass(frozen=True)
class VitConfig:
    """The architecture, read from a transformers ``config.json`` (names as transformers spells them)."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    mlp_size: int  # hidden units of the MLP (SwiGLU: of each of its two halves)
    hidden_act: str
    layer_norm_eps: float
    image_size: int | tuple[int, int]  # the position table's input size: an int when square, else (height, width)
    patch_size: int
    num_channels: int = 3
    qkv_bias: bool = True
    distillation_token: bool = False
    num_register_tokens: int = 0
    layerscale_value: float | None = None  # None: no LayerScale
    swiglu: bool = False
    antialias: bool = False  # resample the position table with antialiasing (DINOv2 with registers)
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    layout: str = "vit"
    raw: dict = field(default_factory=dict, repr=False, compare=False)  # config.json as read, written back on save

    @property
    def grid(self) -> tuple[int, int]:
        height, width = _pair(self.image_size)
        return height // self.patch_size, width // self.patch_size

    @property
    def num_prefix(self) -> int:
        """Tokens before the patches that carry a position (CLS, and DeiT's distillation token)."""
        return 1 + self.distillation_token

    def at_size(self, image_size: int | tuple[int, int]) -> VitConfig:
        return dataclasses.replace(self, image_size=_size(image_size))

    def to_json(self) -> dict:
        """The config.json of a model of this shape: what was read, with this size and class."""
        size = self.image_size
        return {**self.raw, "model_type": self.model_type, "architectures": [FAMILIES[self.model_type]["architecture"]],
                "image_size": list(size) if isinstance(size, tuple) else size}


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _size(value) -> int | tuple[int, int]:
    height, width = _pair(value)
    return height if height == width else (height, width)


def parse_config(raw: dict) -> VitConfig | None:
    """The core's description of a ``config.json``, or None when the core does not implement it
    (another family, or a feature it lacks): the caller then loads the model with transformers."""
    family = FAMILIES.get(raw.get("model_type", ""))
    if family is None:
        return None
    cfg = {**family["defaults"], **{k: v for k, v in raw.items() if v is not None}}
    layout_name = family["layout"] + ("_swiglu" if cfg.get("use_swiglu_ffn") else "")
    layout = LAYOUTS[layout_name]
    patch = _pair(cfg["patch_size"])
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    if cfg["hidden_act"] not in ACTIVATIONS or patch[0] != patch[1] or hidden % heads or cfg.get("head_dim", hidden // heads) != hidden // heads:
        return None
    if layout["mlp"] == "mlp_ratio":
        mlp = int(hidden * cfg["mlp_ratio"])
        if layout.get("swiglu"):
            mlp = (int(mlp * 2 / 3) + 7) // 8 * 8  # as DINOv2's SwiGLU: 2/3 of the size, a multiple of 8
    else:
        mlp = int(cfg["intermediate_size"])
    return VitConfig(
        model_type=raw["model_type"], hidden_size=hidden, num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads, mlp_size=mlp, hidden_act=cfg["hidden_act"],
        layer_norm_eps=float(cfg["layer_norm_eps"]), image_size=_size(cfg["image_size"]), patch_size=patch[0],
        num_channels=int(cfg["num_channels"]), qkv_bias=bool(cfg["qkv_bias"]),
        distillation_token=bool(family.get("distillation_token")),
        num_register_tokens=int(cfg.get("num_register_tokens", 0)),
        layerscale_value=float(cfg["layerscale_value"]) if layout["layerscale"] else None,
        swiglu=bool(layout.get("swiglu")), antialias=bool(family.get("antialias")),
        hidden_dropout_prob=float(cfg["hidden_dropout_prob"]),
        attention_probs_dropout_prob=float(cfg["attention_probs_dropout_prob"]),
        drop_path_rate=float(cfg.get("drop_path_rate", 0.0)), layout=layout_name, raw=dict(raw),
    )


# -- the network ------------------------------------------------------------------------------------
class Embeddings(nn.Module):
    """Patches (a strided convolution), the prefix tokens and the learned absolute positions."""

    def __init__(self, config: VitConfig):
        super().__init__()
        dim, rows, cols = config.hidden_size, *config.grid
        self.patch_embed = nn.Conv2d(config.num_channels, dim, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.distillation_token else None
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, dim)) if config.num_register_tokens else None
        )
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_prefix + rows * cols, dim))
        self.grid, self.num_prefix, self.antialias = config.grid, config.num_prefix, config.antialias
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def position_table(self, grid: tuple[int, int]) -> torch.Tensor:
        """The table for a ``grid`` of patches: the stored one, or (another input size) resampled on the fly."""
        if grid == self.grid:
            return self.position_embeddings
        return resample_position_embeddings(self.position_embeddings, grid, self.num_prefix, self.grid, self.antialias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels.to(self.patch_embed.weight.dtype))
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        batch = x.shape[0]
        prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.distillation_token) if t is not None]
        x = torch.cat([*prefix, x], dim=1) + self.position_table(grid)
        if self.register_tokens is not None:  # after CLS, without a position
            x = torch.cat([x[:, :1], self.register_tokens.expand(batch, -1, -1), x[:, 1:]], dim=1)
        return self.dropout(x)


class Attention(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        dim = config.hidden_size
        self.heads = config.num_attention_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))

    def first_query(self, x: torch.Tensor) -> torch.Tensor:
        """The output for the first token alone, every token still a key and a value: what
        :meth:`forward` gives at ``[:, :1]``, without the queries, attention rows and projections
        of the other tokens."""
        batch, tokens, dim = x.shape
        heads, head = self.heads, dim // self.heads
        weight, bias = self.qkv.weight, self.qkv.bias
        k, v = F.linear(x, weight[dim:], None if bias is None else bias[dim:]).view(batch, tokens, 2, heads, head).unbind(2)
        q = F.linear(x[:, :1], weight[:dim], None if bias is None else bias[:dim]).view(batch, 1, heads, head)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(batch, 1, dim))


class Mlp(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        dim, hidden = config.hidden_size, config.mlp_size
        self.swiglu = config.swiglu
        self.fc1 = nn.Linear(dim, 2 * hidden if self.swiglu else hidden)
        self.act = ACTIVATIONS["silu" if self.swiglu else config.hidden_act]
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.swiglu:
            gate, up = x.chunk(2, dim=-1)
            return self.fc2(self.act(gate) * up)
        return self.fc2(self.act(x))


class LayerScale(nn.Module):
    def __init__(self, dim: int, value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: while training, skip a residual branch for a random part of the batch."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: VitConfig):
        super().__init__()
        dim, eps = config.hidden_size, config.layer_norm_eps
        scale = config.layerscale_value
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(config)
        self.ls1 = LayerScale(dim, scale) if scale is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(config)
        self.ls2 = LayerScale(dim, scale) if scale is not None else nn.Identity()
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path = DropPath(config.drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.dropout(self.attn(self.norm1(x)))))
        return x + self.drop_path(self.ls2(self.dropout(self.mlp(self.norm2(x)))))

    def forward_first(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for the first token alone (``forward(x)[:, :1]``): the last block's
        work when only CLS is read. The other tokens still serve as keys and values, but skip their
        queries, projection and MLP, about five sixths of the block."""
        first = x[:, :1] + self.drop_path(self.ls1(self.dropout(self.attn.first_query(self.norm1(x)))))
        return first + self.drop_path(self.ls2(self.dropout(self.mlp(self.norm2(first)))))


class VisionTransformer(nn.Module):
    """Pixels (N, C, H, W), already normalised, in; the final CLS token (N, D) after the final norm out."""

    def __init__(self, config: VitConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # checkpoint tensors the forward pass does not use (ViT's pooler, DINOv2's mask token), kept
        # aside and saved back as they came, so a saved model is whole for transformers
        self.extra: dict[str, torch.Tensor] = {}

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Every token after the final norm: transformers' ``last_hidden_state``."""
        x = self.embeddings(pixels)
        for block in self.layers:
            x = block(x)
        return self.norm(x)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        if not len(self.layers):
            return self.norm(x[:, 0])
        for block in self.layers[:-1]:
            x = block(x)
        # only CLS is read: in the last block the other tokens matter as its keys and values alone,
        # and the final norm is per token
        return self.norm(self.layers[-1].forward_first(x)[:, 0])


def init_weights(model: VisionTransformer, std: float = 0.02) -> VisionTransformer:
    """Random initialisation for training from scratch (truncated normal, as transformers' ViT)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    emb = model.embeddings
    for token in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
        if token is not None:
            nn.init.trunc_normal_(token, std=std)
    return model


def _skeleton(config: VitConfig) -> VisionTransformer:
    """The module without memory (meta tensors): its weights come from a state dict, assigned."""
    with torch.device("meta"):
        return VisionTransformer(config)


# -- weight surgery: the key map as pure functions ------------------------------------------------
_LAYER = re.compile(r"layers\.(\d+)\.(.+)")


def checkpoint_keys(name: str, config: VitConfig) -> tuple[str, ...]:
    """The checkpoint key(s) that hold the core's weight ``name`` (several: fused along dim 0)."""
    match = _LAYER.fullmatch(name)
    base, rest, table = "", name, TOP_KEYS
    if match:
        base, rest, table = f"encoder.layer.{match.group(1)}.", match.group(2), LAYOUTS[config.layout]["keys"]
    for ours, theirs in table.items():
        if rest.startswith(ours):
            suffix = rest[len(ours):]
            return tuple(base + t + suffix for t in (theirs if isinstance(theirs, tuple) else (theirs,)))
    return (base + rest,)


@functools.lru_cache(maxsize=16)
def _names(config: VitConfig) -> tuple[str, ...]:
    return tuple(_skeleton(config).state_dict())


def _sources(state: dict[str, torch.Tensor], config: VitConfig) -> tuple[dict[str, list[torch.Tensor]], dict]:
    """For each weight of the core, the checkpoint tensors it is made of; and the tensors left over."""
    prefix = FAMILIES[config.model_type]["prefix"]
    if any(key.startswith(prefix) for key in state):
        state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    parts, used, missing = {}, set(), []
    for name in _names(config):
        sources = checkpoint_keys(name, config)
        absent = [s for s in sources if s not in state]
        if absent:
            missing += absent
            continue
        parts[name] = [state[s] for s in sources]
        used.update(sources)
    if missing:
        raise ModelError(f"the checkpoint lacks weights the image tower needs: {', '.join(sorted(missing)[:5])}")
    return parts, {key: value for key, value in state.items() if key not in used}


def to_core(state: dict[str, torch.Tensor], config: VitConfig) -> tuple[dict, dict]:
    """A transformers state dict -> (the core's state dict, the base model's tensors it does not use).

    A task model's weights (``vit.`` ... plus a classifier) are read as its tower's; its heads are dropped.
    """
    parts, extra = _sources(state, config)
    return {name: p[0] if len(p) == 1 else torch.cat(p) for name, p in parts.items()}, extra


_NUMPY = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _join(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``parts`` concatenated along dim 0 and converted to ``dtype``: always a new tensor, made on one
    thread. Loading is memory-bound, and torch's intra-op threads spin against each other when the
    CPU is shared, costing several times the CPU time (docs/core.md)."""
    if dtype in _NUMPY and all(p.dtype in _NUMPY for p in parts):
        return torch.from_numpy(np.concatenate([p.numpy() for p in parts], dtype=_NUMPY[dtype]))
    return torch.cat([p.to(dtype) for p in parts])


def to_checkpoint(state: dict[str, torch.Tensor], config: VitConfig) -> dict[str, torch.Tensor]:
    """The core's state dict -> transformers' layout for ``config``'s family (the inverse of :func:`to_core`)."""
    out = {}
    for name, value in state.items():
        keys = checkpoint_keys(name, config)
        if len(keys) == 1:
            out[keys[0]] = value
        else:
            out.update(zip(keys, (part.clone() for part in value.chunk(len(keys), dim=0))))
    return out


def resize_state(state: dict[str, torch.Tensor], config: VitConfig, image_size) -> dict[str, torch.Tensor]:
    """A copy of the core's ``state`` whose position table is laid out for ``image_size`` inputs."""
    new = config.at_size(image_size)
    out = dict(state)
    key = "embeddings.position_embeddings"
    out[key] = resample_position_embeddings(state[key], new.grid, config.num_prefix, config.grid, config.antialias)
    return out


# -- files ----------------------------------------------------------------------------------------------
def read_config(path: str | os.PathLike) -> VitConfig | None:
    """The core's config of a saved model directory, or None when the core does not implement it."""
    try:
        with open(Path(path) / "config.json", encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {Path(path) / 'config.json'}: {exc}") from exc
    return parse_config(raw)


def _weight_files(folder: Path) -> list[Path]:
    """The files of one checkpoint: safetensors (sharded or not) first, else pytorch_model.bin."""
    for index, single in (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (folder / index).is_file():
            with open(folder / index, encoding="utf-8") as fh:
                return [folder / name for name in sorted(set(json.load(fh)["weight_map"].values()))]
        if (folder / single).is_file():
            return [folder / single]
    found = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not found:
        raise ModelError(f"no weights (*.safetensors or *.bin) in {folder}")
    return found


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(path)):
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(file))
            else:
                state.update(torch.load(file, map_location="cpu", weights_only=True))
        except Exception as exc:  # a damaged file: say which
            raise ModelError(f"cannot read weights {file}: {exc}") from exc
    return state


def build(config: VitConfig, state: dict[str, torch.Tensor], extra: dict | None = None) -> VisionTransformer:
    """The core with ``state`` as its weights (assigned, not copied), in eval mode."""
    model = _skeleton(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"the weights do not fit a {config.model_type} of this shape: {exc}") from exc
    model.extra = dict(extra or {})
    return model.eval()


def from_pretrained(
    path: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    config: VitConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> VisionTransformer:
    """Load a saved ViT, DeiT or DINOv2 directory, its position table resampled once for ``image_size`` inputs."""
    config = config or read_config(path)
    if config is None:
        raise ModelError(f"{path} is not a model the built-in ViT implements ({', '.join(FAMILIES)})")
    parts, extra = _sources(read_weights(path), config)
    state = {name: _join(p, dtype) if p[0].is_floating_point() else torch.cat(p) for name, p in parts.items()}
    if image_size is not None and config.at_size(image_size).grid != config.grid:
        state = resize_state(state, config, image_size)
    return build(config.at_size(image_size) if image_size is not None else config, state, extra)


def resized(model: VisionTransformer, image_size: int | tuple[int, int]) -> VisionTransformer:
    """The same weights for ``image_size`` inputs (a new module, on the same device and dtype)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = resize_state(state, model.config, image_size)
    new = build(model.config.at_size(image_size), state, model.extra)
    for name, param in new.named_parameters():  # the same trainability as before
        param.requires_grad_(model.get_parameter(name).requires_grad)
    return new.train(model.training)


def checkpoint_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """Everything a ``save_pretrained`` directory holds for ``model``, in transformers' layout."""
    return {**model.extra, **to_checkpoint(model.state_dict(), model.config)}


def save_pretrained(model: VisionTransformer, out: str | os.PathLike, state: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Write ``config.json`` and ``model.safetensors`` (``state`` from :func:`checkpoint_state`, already cast)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "config.json", "w", encoding="utf-8") as fh:
        json.dump(with_dtype(model.config.to_json(), dtype), fh, indent=2, sort_keys=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


def with_dtype(config: dict, dtype: torch.dtype) -> dict:
    """``config`` (a config.json dict) naming ``dtype`` as its weights' type, as transformers writes it."""
    name = str(dtype).removeprefix("torch.")
    return {**config, "dtype": name, **({"torch_dtype": name} if "torch_dtype" in config else {})}


def scratch_config(preset: dict, image_size: int, patch_size: int) -> VitConfig:
    """A ViT of the ``preset`` sizes, as transformers' ``ViTConfig`` would write it."""
    raw = {**_VIT_DEFAULTS, **preset, "model_type": "vit", "image_size": image_size, "patch_size": patch_size,
           "layer_norm_eps": 1e-6, "qkv_bias": True, "initializer_range": 0.02, "encoder_stride": patch_size}
    config = parse_config(raw)
    if config is None or math.prod(config.grid) == 0:
        raise ValueError(f"cannot build a ViT of {preset} at {image_size} px with {patch_size}-px patches")
    return config
