"""API keys for `vitsearch serve`: which routes need one, and the check, as one FastAPI dependency.

Every route has an access level, named in its OpenAPI operation as ``x-vitsearch-access``:

* ``open``: never needs a key (``/healthz``, the page);
* ``read``: needs one only with ``--keys-for-reads`` (searches, files, rows, stats, metrics);
* ``write``: needs one whenever keys are set (``POST /images``, ``DELETE /images/{id}``).

A route that names no level is a write, so a route added later without thinking of keys is guarded,
not open. The dependency runs before the route's own code (and before its body is read), so a
refused request changes nothing. Keys are compared by their SHA-256 digests with
``hmac.compare_digest`` against every key, so the time taken tells nothing about how much of a key
was right or which key matched; the keys themselves are never logged nor quoted in an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable

from fastapi import Request

from ..errors import UsageError
from .errors import ApiError

OPEN, READ, WRITE = "open", "read", "write"
LEVELS = (OPEN, READ, WRITE)
ACCESS = "x-vitsearch-access"  # the OpenAPI extension that names a route's level
SCHEME = "apiKey"  # the name of the security scheme in the OpenAPI document
SHORT_KEY = 16


def access(level: str) -> dict:
    """``openapi_extra`` for a route of this level: ``@app.get(..., openapi_extra=access(READ))``."""
    if level not in LEVELS:
        raise UsageError(f"access level must be one of {', '.join(LEVELS)}, not {level!r}")
    return {ACCESS: level}


def level_of(route) -> str:
    """The access level of a matched route (``write`` when it names none; ``open`` for FastAPI's own
    documentation routes, which are no API routes)."""
    extra = getattr(route, "openapi_extra", None)
    if extra is None and not hasattr(route, "dependant"):
        return OPEN
    return (extra or {}).get(ACCESS, WRITE)


def check_key(key: str) -> str:
    """A key as given, or ValueError: printable ASCII without spaces or commas (the message never
    quotes the key)."""
    if not key:
        raise UsageError("an API key cannot be empty")
    if not all(33 <= ord(c) <= 126 for c in key) or "," in key:
        raise UsageError("an API key must be printable ASCII without spaces or commas")
    return key


def split_keys(text: str) -> list[str]:
    """The keys in a comma-separated list (``VITSEARCH_API_KEYS``), blanks around them dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


class Keys:
    """The API keys a server accepts, and whether reads need one too. No keys: every route is open."""

    def __init__(self, keys: Iterable[str] = (), *, reads: bool = False):
        self._digests = tuple(hashlib.sha256(check_key(k).encode()).digest() for k in keys)
        self.reads = reads

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:  # never the keys themselves
        return f"Keys({len(self)} key{'s' if len(self) != 1 else ''}, reads={self.reads})"

    def needed(self, level: str) -> bool:
        """Whether a route of ``level`` needs a key here."""
        return self.enabled and (level == WRITE or (level == READ and self.reads))

    def valid(self, key: str) -> bool:
        """Whether ``key`` is one of the keys, in time that does not depend on how much of it matched."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = False
        for known in self._digests:  # no early exit: every key is compared
            found |= hmac.compare_digest(known, digest)
        return found

    def check(self, level: str, authorization: str | None) -> None:
        """Nothing when a route of ``level`` may be called with this ``Authorization`` header; else 401."""
        if not self.needed(level):
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if not authorization:
            raise ApiError(401, "this route needs an API key: send the header 'Authorization: Bearer <key>'",
                           challenge)
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise ApiError(401, "send the API key as 'Authorization: Bearer <key>'", challenge)
        if not self.valid(credential.strip()):
            raise ApiError(401, "the API key is not valid", {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def require_key(keys: Keys) -> Callable:
    """The app-wide dependency: refuses a request whose route needs a key that it did not send."""

    async def api_key(request: Request) -> None:
        keys.check(level_of(request.scope.get("route")), request.headers.get("authorization"))

    return api_key


def document(app, keys: Keys) -> None:
    """Add the bearer scheme to the app's OpenAPI document, on the operations that need a key here
    (so /docs offers an 'Authorize' button)."""
    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = plain()
        if keys.enabled:
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[SCHEME] = {"type": "http", "scheme": "bearer",
                               "description": "one of the keys given to `vitsearch serve --api-key`"}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if keys.needed(operation.get(ACCESS, WRITE)):
                        operation["security"] = [{SCHEME: []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
