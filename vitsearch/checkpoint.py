"""Which model: find a checkpoint (bundled, local directory or hub id) and describe it from its files.

Nothing here imports torch or builds a model, so a collection's model can be checked instantly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError
from .preprocess import Preprocessing

BUNDLED_NAME = "vitsearch-vits14-126"
BUNDLED_DIR = Path(__file__).resolve().parent / "models" / BUNDLED_NAME
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
RECORD_FILE = "vitsearch.json"  # what vitsearch adds to a save_pretrained directory it writes

# Model families as data, for those that load with transformers (ViT, DeiT and DINOv2 run on the
# built-in core instead, see vitsearch.vit.FAMILIES): which transformers class loads the image tower
# and which output holds the final CLS token after the final norm. Families not listed load through
# AutoModel and use ``last_hidden_state[:, 0]`` (BEiT, ViT-MAE ... apply their final norm there).
FAMILIES: dict[str, dict] = {
    "clip": {"class": "CLIPVisionModel", "output": "pooler_output"},
    "clip_vision_model": {"class": "CLIPVisionModel", "output": "pooler_output"},
    "vit_mae": {"class": "AutoModel", "output": "cls", "config": {"mask_ratio": 0.0}},
}
_NO_CLS = {"siglip", "siglip_vision_model", "siglip2", "convnext", "resnet", "efficientnet", "swin", "swinv2"}


@dataclass(frozen=True)
class ModelSpec:
    """What identifies a model for the store, read without loading any weights."""

    name: str  # hub id, or absolute local directory (what AutoModel.from_pretrained accepts)
    path: str  # local directory holding the files
    model_type: str
    dim: int
    fingerprint: str
    preprocessing: Preprocessing = field(repr=False)

    @property
    def is_bundled(self) -> bool:
        return Path(self.path) == BUNDLED_DIR


def _hub_snapshot(name: str) -> str:
    """Local snapshot of a hub model: the cache first, then a download (safetensors, else .bin)."""
    from huggingface_hub import snapshot_download

    reason = "no weights on the Hub"
    for weights in ("*.safetensors", "*.bin"):
        for offline in (True, False):
            try:
                path = snapshot_download(name, allow_patterns=["*.json", "*.txt", weights], local_files_only=offline)
            except Exception as exc:  # noqa: BLE001 - any hub or network failure means "not available"
                reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                continue
            if any(p.suffix in _WEIGHT_SUFFIXES for p in Path(path).iterdir()):
                return path
            break
    raise ModelError(f"cannot find model {name!r}: not a local directory, and the Hugging Face Hub failed: {reason}")


def resolve_checkpoint(name: str | None) -> tuple[str, str]:
    """(recorded name, local directory) of a model: None → the bundled one; a directory; or a hub id."""
    if name is None or name in ("bundled", "default", BUNDLED_NAME):
        return str(BUNDLED_DIR), str(BUNDLED_DIR)
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        path = os.path.abspath(expanded)
        return path, path
    if os.path.exists(expanded) or expanded.startswith((".", "/")) or expanded.count("/") > 1:
        raise ModelError(f"model {name!r} is not a directory with a saved model (config.json and weights)")
    return name, _hub_snapshot(name)


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def _fingerprint(path: Path, preprocessing: Preprocessing) -> str:
    """sha256 over the weight files and the preprocessing, shortened: what decides the vectors."""
    digest = hashlib.sha256(repr(preprocessing).encode())
    weights = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    if not weights:
        raise ModelError(f"no weights (*.safetensors or *.bin) in {path}")
    for weight in weights:
        digest.update(weight.name.encode())
        with open(weight, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def read_record(path: str | os.PathLike) -> dict:
    """The training record of a model that vitsearch saved (empty for other checkpoints).

    A record written by a newer vitsearch is refused: its files may mean something this one does not know.
    """
    from . import __version__

    record = _read_json(Path(path) / RECORD_FILE)
    made_by = record.get("vitsearch_version")
    if made_by and _version_tuple(made_by) > _version_tuple(__version__):
        raise ModelError(
            f"{path} was saved by vitsearch {made_by}, newer than this vitsearch {__version__}; upgrade vitsearch to use it"
        )
    return record


def write_json(path: str | os.PathLike, data: dict) -> None:
    """One JSON file of a model directory, as every writer of one lays it out (indented, UTF-8)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)


def write_record(path: str | os.PathLike, record: dict) -> None:
    """Write the vitsearch record of a model directory (the mirror of :func:`read_record`), stamped
    with this vitsearch's version so that an older one refuses it."""
    from . import __version__

    write_json(Path(path) / RECORD_FILE, {"vitsearch_version": __version__, **record})


def load_spec(name: str | None = None) -> ModelSpec:
    """Describe a model (dimension, preprocessing, fingerprint) from its files, without building it.

    ``name`` is a hub id, a local ``save_pretrained`` directory, or None for the bundled model.

        >>> spec = load_spec()
        >>> spec.dim, spec.is_bundled, spec.preprocessing.input_size
        (384, True, (126, 126))
    """
    recorded, local = resolve_checkpoint(name)
    path = Path(local)
    config = _read_json(path / "config.json")
    if not config:
        raise ModelError(f"{local} has no config.json: not a saved transformers model")
    read_record(path)
    model_type = config.get("model_type", "")
    if model_type in _NO_CLS:
        raise ModelError(f"model type {model_type!r} has no CLS token; use a ViT-family model (ViT, DeiT, DINOv2, CLIP)")
    vision = config.get("vision_config") if model_type == "clip" else config
    dim = int((vision or {}).get("hidden_size", 0))
    if not dim:
        raise ModelError(f"cannot tell the embedding size of {recorded!r} (no hidden_size in config.json)")
    proc = _read_json(path / "preprocessor_config.json")
    if not proc:
        image_size = int((vision or {}).get("image_size", 224))
        proc = {"size": {"height": image_size, "width": image_size}, "resample": 3}
    preprocessing = Preprocessing.from_config(proc)
    return ModelSpec(recorded, local, model_type, dim, _fingerprint(path, preprocessing), preprocessing)
