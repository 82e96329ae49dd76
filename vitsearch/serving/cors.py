"""Cross-origin requests: off unless origins are given, then answered for those origins only."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from ..errors import UsageError

METHODS = ["GET", "POST", "DELETE"]
HEADERS = ["Authorization", "Content-Type"]


def check_origin(origin: str) -> str:
    """An origin as browsers send it (``scheme://host[:port]``, or ``*``), or ValueError saying why not."""
    origin = origin.strip()
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"a CORS origin looks like https://shop.example or http://localhost:3000, not {origin!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise UsageError(f"a CORS origin is a scheme, a host and a port only: "
                         f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}, not {origin!r}")
    return f"{parts.scheme}://{parts.netloc}"


def add_cors(app, origins: Iterable[str]) -> None:
    """Answer preflights and add CORS headers for ``origins``; nothing at all when there are none.

    Keys travel in the ``Authorization`` header, never in cookies, so credentials stay off and a page
    from an allowed origin must hold the key itself.
    """
    origins = [check_origin(o) for o in origins]
    if not origins:
        return
    from starlette.middleware.cors import CORSMiddleware

    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=METHODS, allow_headers=HEADERS,
                       allow_credentials=False, max_age=600)
