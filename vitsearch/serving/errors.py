"""The error every room of the server raises to answer a request with a status."""

from __future__ import annotations

from ..errors import VitsearchError


class ApiError(VitsearchError):
    """An error with the HTTP status it answers with (and any headers that answer needs)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers
