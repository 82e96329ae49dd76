"""User metadata for indexed images: read from a CSV or JSON Lines file, keyed by absolute path.

CSV: a header with a ``path`` column (a path, or the URL / URI of a remote image); the other columns
become fields, their values typed by inference (int, float, true/false, else text; an empty cell
means "no value"). JSON Lines: one object per line with a ``path`` key; scalar values keep their
JSON type. Relative paths are taken from the metadata file's folder. Field names must suit Milvus
and not clash with vitsearch's own.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

from .errors import VitsearchError
from .store import RESERVED

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
Scalar = str | int | float | bool


def infer(text: str) -> Scalar | None:
    """A CSV cell as the value it reads as: int, float, bool, or the text itself (None when empty)."""
    value = text.strip()
    if value == "":
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        number = int(value)
        if abs(number) < 2**63:
            return number
    except ValueError:
        pass
    try:
        number = float(value)
        if math.isfinite(number):  # NaN and inf stay text
            return number
    except ValueError:
        pass
    return value


def check_field(name: str, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise VitsearchError(f"{where}: {name!r} is not a usable field name (letters, digits and _, not starting with a digit)")
    if name in RESERVED:
        raise VitsearchError(f"{where}: {name!r} is one of vitsearch's own fields ({', '.join(sorted(RESERVED))})")
    return name


def check_value(key: str, value, where: str) -> Scalar:
    """``value`` if Milvus can store it as a metadata field (string, number or boolean), else an error."""
    if not isinstance(value, (str, int, float, bool)):
        raise VitsearchError(f"{where}: {key!r} must be a string, number or boolean")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise VitsearchError(f"{where}: {key!r} is outside the 64-bit integer range")
    if isinstance(value, float) and not math.isfinite(value):
        raise VitsearchError(f"{where}: {key!r} is {value}, which Milvus cannot store")
    return value


def _absolute(base: str, path: str) -> str:
    from .fetch import is_remote, local_path

    if is_remote(path):
        return path  # a URL or an object-store URI: the row's key as given
    return os.path.abspath(os.path.join(base, os.path.expanduser(local_path(path))))


def _read_csv(path: str, base: str) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        names = [n.strip() for n in reader.fieldnames or []]
        if "path" not in names:
            raise VitsearchError(f"{path}: the first line must name the columns, including 'path'")
        for name in names:
            if name != "path":
                check_field(name, path)
        out = {}
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items() if k is not None}
            if not (row.get("path") or "").strip():
                raise VitsearchError(f"{path}, line {reader.line_num}: empty path")
            fields = {k: infer(v or "") for k, v in row.items() if k != "path"}
            out[_absolute(base, row["path"].strip())] = {k: v for k, v in fields.items() if v is not None}
    return out


class NotJson(str):
    """What :func:`json_lines` gives for a line that is not JSON, with ``bad_lines``: why."""


def json_lines(path: str, *, bad_lines: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSON Lines file; a line that is not
    JSON raises VitsearchError naming the file and the line, or with ``bad_lines`` is given as a
    :class:`NotJson` (the reason) for the caller to report."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                if not bad_lines:
                    raise VitsearchError(f"{path}, line {number}: not JSON ({exc})") from None
                yield number, NotJson(f"not JSON ({exc})")


def _read_jsonl(path: str, base: str) -> dict[str, dict]:
    out = {}
    for number, record in json_lines(path):
        if not isinstance(record, dict) or not isinstance(record.get("path"), str) or not record["path"]:
            raise VitsearchError(f"{path}, line {number}: each line must be an object with a 'path' string")
        fields = {}
        for key, value in record.items():
            if key == "path" or value is None:
                continue
            check_field(key, f"{path}, line {number}")
            fields[key] = check_value(key, value, f"{path}, line {number}")
        out[_absolute(base, record["path"])] = fields
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, dict]:
    """{absolute image path: {field: value}} from a ``.csv`` or ``.jsonl`` / ``.ndjson`` file."""
    path = os.path.abspath(os.fspath(path))
    base = os.path.dirname(path)
    lower = path.lower()
    try:
        if lower.endswith(".csv"):
            return _read_csv(path, base)
        if lower.endswith((".jsonl", ".ndjson", ".json")):
            return _read_jsonl(path, base)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise VitsearchError(f"cannot read metadata {path}: {exc}") from None
    raise VitsearchError(f"metadata {path} must be a .csv or .jsonl file")
