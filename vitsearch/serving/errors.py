"""The error every room of the server raises to answer a request with a status (defined with the
others in :mod:`vitsearch.errors`; importable from here too)."""

from __future__ import annotations

from ..errors import ApiError

__all__ = ["ApiError"]
