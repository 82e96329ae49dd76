"""The exceptions the library raises, all of them here. Only the CLI and the server turn them into
messages and exit codes: the CLI prints a :class:`UsageError` as a usage error (exit 2) and any other
:class:`VitsearchError` as one ``Error: ...`` line (exit 1); the server answers an :class:`ApiError`
with its status."""

from __future__ import annotations


class VitsearchError(Exception):
    """Base class of every error vitsearch raises on purpose."""


class UsageError(VitsearchError, ValueError):
    """An argument or option the caller gave makes no sense (the message names the valid values).

    A :class:`ValueError` too, so that code catching ``ValueError`` for bad arguments keeps working;
    a ``ValueError`` that is not a ``UsageError`` is a bug, not bad input."""


def check_count(value, name: str, low: int = 1, high: int | None = None) -> int:
    """``value`` if it is a whole number from ``low`` to ``high``, else a :class:`UsageError` naming
    ``name`` (a ``k``, a batch size…): not a TypeError, or a bad argument that a store blames itself for."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UsageError(f"{name} must be {span}, not {value}")
    return int(value)


class ImageError(VitsearchError):
    """An image could not be read or decoded (the message says why)."""


class ModelError(VitsearchError):
    """A model could not be found, loaded or understood."""


class StoreError(VitsearchError):
    """The Milvus store could not be opened, read or written."""


class StoreLockedError(StoreError):
    """Another process holds the Milvus Lite store."""


class ModelMismatchError(StoreError):
    """The collection was built with another model than the one asked for."""


class FilterError(StoreError):
    """A filter expression was rejected by Milvus."""


class TrainingInterrupted(VitsearchError):
    """Training stopped on request; the checkpoint it left resumes it."""


class ApiError(VitsearchError):
    """An error with the HTTP status it answers with (and any headers that answer needs)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers
