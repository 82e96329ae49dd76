"""One place that resolves defaults: arguments first, then ``VITSEARCH_*`` variables, then built-ins."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

DEFAULT_COLLECTION = "images"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def data_dir() -> Path:
    """``$XDG_DATA_HOME/vitsearch`` (``~/.local/share/vitsearch`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "vitsearch"


def resolve_uri(uri: str | None = None) -> str:
    """The store URI: the argument, ``$VITSEARCH_URI``, or a Milvus Lite file in the data directory."""
    uri = uri or os.environ.get("VITSEARCH_URI")
    if uri:
        return uri
    return str(data_dir() / "vitsearch.db")


def resolve_collection(collection: str | None = None) -> str:
    return collection or os.environ.get("VITSEARCH_COLLECTION") or DEFAULT_COLLECTION


def resolve_token(token: str | None = None) -> str | None:
    return token or os.environ.get("VITSEARCH_TOKEN") or None


def resolve_model(model: str | None = None) -> str | None:
    """An explicit model (argument or ``$VITSEARCH_MODEL``), or None: the collection's, else the bundled one."""
    return model or os.environ.get("VITSEARCH_MODEL") or None


def resolve_choice(value: str | None, env: str, choices: tuple[str, ...]) -> str:
    value = (value or os.environ.get(env) or "auto").lower()
    if value not in choices:
        raise UsageError(f"{value!r} is not one of {', '.join(choices)}")
    return value
