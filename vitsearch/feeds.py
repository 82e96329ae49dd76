"""Product feeds: a CSV, JSON Lines or Parquet file that lists images with their metadata.

Each row names one or more images in the image column (a URL, an object-store URI or a local path;
several as a list: a JSON / Parquet list, or in a CSV cell a JSON array or values separated by ``|``)
and its other columns become the metadata of every image of the row, typed as ``--metadata`` types
them: CSV cells by inference (int, float, true/false, else text), JSON and Parquet values as they
are. An empty cell means "no value" (and removes a value an earlier run stored). The ``--id-column``
is kept as text whatever it looks like (SKU ``00123`` stays ``"00123"``) and must not be empty.

A row that names no image costs a line in the summary's ``failed`` list; a feed whose columns cannot
be stored (a missing image column, a name Milvus refuses, a nested value) is an error for the run.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import VitsearchError
from .metadata import NotJson, Scalar, check_field, check_value, infer, json_lines

FEED_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                   ".pq": "parquet"}


@dataclass
class FeedRow:
    """One row of a feed: where it is (for messages), its images, and its metadata (None: no value)."""

    where: str
    images: list[str]
    fields: dict[str, Scalar | None] = field(default_factory=dict)
    error: str | None = None  # why the row gives no image


def feed_format(path: str | os.PathLike) -> str | None:
    """``"csv"``, ``"jsonl"`` or ``"parquet"`` by the file's extension; None for other files."""
    return FEED_EXTENSIONS.get(os.path.splitext(os.fspath(path))[1].lower())


def read_feed(path: str | os.PathLike, image_column: str, id_column: str | None = None) -> Iterator[FeedRow]:
    """The rows of the feed at ``path`` (see the module's docstring)."""
    path = os.fspath(path)
    kind = feed_format(path)
    if kind is None:
        raise VitsearchError(f"{path}: a feed is a .csv, .jsonl or .parquet file")
    if id_column is not None and id_column == image_column:
        raise VitsearchError("--id-column must name another column than --image-column")
    reader = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[kind]
    try:
        yield from reader(path, _Columns(path, image_column, id_column))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise VitsearchError(f"cannot read the feed {path}: {exc}") from None


class _Columns:
    """Turns a record (column -> value) into a :class:`FeedRow`, checking each column name once."""

    def __init__(self, path: str, image_column: str, id_column: str | None):
        self.path, self.image, self.id = path, image_column, id_column
        self.checked: set[str] = set()

    def require(self, names) -> None:
        """The image and id columns must be among ``names`` (a CSV header, a Parquet schema)."""
        for option, name in (("--image-column", self.image), ("--id-column", self.id)):
            if name is not None and name not in names:
                raise VitsearchError(f"{self.path}: no column {name!r} ({option}); its columns are "
                                     f"{', '.join(map(repr, names)) or 'none'}")

    def row(self, where: str, record: dict, *, typed: bool) -> FeedRow:
        """``typed``: values keep their type (JSON, Parquet); otherwise they are CSV text to infer."""
        images, error = self._images(record.get(self.image), typed)
        fields: dict[str, Scalar | None] = {}
        for name, value in record.items():
            if name == self.image:
                continue
            if name not in self.checked:
                check_field(name, f"{self.path}, column {name!r}")
                self.checked.add(name)
            if name == self.id:
                text = "" if value is None else str(value).strip()
                if not text and error is None:
                    error = f"empty {name!r} (--id-column)"
                fields[name] = text or None
            elif typed:
                fields[name] = _typed(value, name, f"{self.path}, {where}")
            else:
                fields[name] = infer(value or "")
        return FeedRow(where, images, fields, error)

    def _images(self, value, typed: bool) -> tuple[list[str], str | None]:
        if isinstance(value, str) and not typed:
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    return [], f"{self.image!r} starts with '[' but is not a JSON array"
            else:
                value = text.split("|") if "|" in text else text
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value if v is not None):
            return [], f"{self.image!r} must be a URL or path, or a list of them"
        images = [v.strip() for v in value if v is not None and v.strip()]
        return images, (None if images else f"no image in column {self.image!r}")


def _typed(value, name: str, where: str) -> Scalar | None:
    """A JSON or Parquet value as a metadata value: NaN is "no value", decimals become floats and
    dates ISO 8601 text; lists and objects are refused like in ``--metadata`` files."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return check_value(name, value, where)


# The longest CSV cell read (Python's csv module stops at 128 KiB): product descriptions with markup run long
CSV_CELL_LIMIT = 16 << 20


def _csv_rows(path: str, columns: _Columns) -> Iterator[FeedRow]:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_CELL_LIMIT))
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.lower().endswith(".tsv") else ",")
        names = [(n or "").strip() for n in reader.fieldnames or []]
        columns.require(names)
        reader.fieldnames = names
        for record in reader:
            record.pop(None, None)  # cells beyond the header
            yield columns.row(f"line {reader.line_num}", record, typed=False)


def _jsonl_rows(path: str, columns: _Columns) -> Iterator[FeedRow]:
    first = True
    for number, record in json_lines(path, bad_lines=True):
        if not isinstance(record, dict):
            problem = record if isinstance(record, NotJson) else "each line must be a JSON object"
            if first:  # no good line yet: not a JSON Lines feed at all (a wrong file, an export cut short)
                raise VitsearchError(f"{path}, line {number}: {problem}")
            yield FeedRow(f"line {number}", [], {}, problem)  # one damaged line costs that line
            continue
        if first:  # a misspelt column fails the run once, not every row
            columns.require(list(record))
            first = False
        yield columns.row(f"line {number}", record, typed=True)


def _parquet_rows(path: str, columns: _Columns) -> Iterator[FeedRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise VitsearchError("reading .parquet feeds needs pyarrow: pip install 'vitsearch[parquet]'") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own types for a broken file
        raise VitsearchError(f"cannot read the feed {path}: {exc}") from None
    columns.require(table.schema_arrow.names)
    number = 0
    for batch in table.iter_batches(batch_size=10_000):
        for record in batch.to_pylist():
            number += 1
            yield columns.row(f"row {number}", record, typed=True)
