"""HTTP guards: a bound on request bodies (size and stalls) and on the time a request head may take."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse

from .errors import ApiError


class BodyLimit:
    """Guards request bodies: over ``limit`` bytes is 413 (at once when Content-Length says so, else as
    soon as the streamed body passes the limit, so nothing larger is buffered), and a body whose next
    chunk takes more than ``timeout`` seconds to arrive is 408 (a slow client cannot hold a worker)."""

    def __init__(self, app, limit: int, message: str, timeout: float = 30.0):
        self.app, self.limit, self.message, self.timeout = app, limit, message, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": self.message}, status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        seen = 0
        complete = False

        async def guarded():
            nonlocal seen, complete
            if complete:  # after the body, receive() only waits for a disconnect: no timeout then
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                raise ApiError(408, f"the request body stalled: no data for {self.timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, self.message)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, guarded, send)


def protocol_with_head_timeout(seconds: float):
    """uvicorn's h11 protocol, closing a connection whose request line and headers have not all arrived
    ``seconds`` after it opened (or after its previous response): uvicorn itself waits forever, so a
    few hundred slow-loris connections would use up ``limit_concurrency``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self):
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._head_timeout)

        def _disarm(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self):
            self._head_timer = None
            if self.cycle is None or self.cycle.response_complete:  # no request under way
                self.transport.close()

    return Protocol
