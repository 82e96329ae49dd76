"""A local image server for tests and benchmarks: stdlib HTTP on 127.0.0.1, in a thread.

Routes are added per path: images (with an ETag and Last-Modified, answering conditional requests
with 304), fixed statuses, a 429 that turns into 200, a response slower than any sane timeout, HTML
named ``.jpg``, bodies over a size limit (declared or streamed), and an image whose content and ETag
change when a test says so. It counts what it was asked and what it sent.
"""

from __future__ import annotations

import collections
import email.utils
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self


class ImageHost:
    def __init__(self, latency: float = 0.0, *, cors: bool = False):
        self.latency = latency  # added before every answer (the benchmark's 50 ms)
        self.cors = cors  # answer every origin's preflight and reads, as a careless (or hostile) host would
        self.routes: dict[str, Callable] = {}
        self.requests: collections.Counter = collections.Counter()  # path -> requests
        self.bodies: collections.Counter = collections.Counter()  # path -> image bodies sent (200s)
        self.headers: dict[str, list[dict]] = collections.defaultdict(list)
        self.active = self.max_active = 0
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bodies.clear()
            self.max_active = 0

    # -- routes ---------------------------------------------------------------------------------
    def image(self, path: str, data: bytes, *, etag: bool = True, last_modified: float | None = 1_700_000_000.0,
              content_type: str = "image/png") -> str:
        """An image that answers If-None-Match / If-Modified-Since with 304 while it is unchanged."""
        state = {"data": data}

        def answer(h):
            body = state["data"]
            tag = f'"{hashlib.sha256(body).hexdigest()[:16]}"' if etag else None
            stamp = email.utils.formatdate(last_modified, usegmt=True) if last_modified else None
            asked_tag, asked_time = h.headers.get("If-None-Match"), h.headers.get("If-Modified-Since")
            if (asked_tag and asked_tag == tag) or (not asked_tag and stamp and asked_time == stamp):
                h.reply(304, b"", {"ETag": tag} if tag else {})
                return
            headers = {"Content-Type": content_type}
            if tag:
                headers["ETag"] = tag
            if stamp:
                headers["Last-Modified"] = stamp
            self._count_body(h.path)
            h.reply(200, body, headers)

        self.routes[path] = answer
        self.routes[path].state = state  # type: ignore[attr-defined]
        return self.url(path)

    def replace(self, path: str, data: bytes) -> None:
        """New content (and so a new ETag) for an image route."""
        self.routes[path].state["data"] = data

    def status(self, path: str, code: int, headers: dict | None = None) -> str:
        self.routes[path] = lambda h: h.reply(code, f"status {code}\n".encode(), headers or {})
        return self.url(path)

    def busy_then(self, path: str, data: bytes, *, times: int = 1, retry_after: str = "1") -> str:
        """429 with Retry-After for the first ``times`` requests, then the image."""
        left = {"n": times}
        self.image(path, data)
        image = self.routes[path]

        def answer(h):
            with self._lock:
                busy = left["n"] > 0
                left["n"] -= busy
            if busy:
                h.reply(429, b"slow down\n", {"Retry-After": retry_after})
            else:
                image(h)

        self.routes[path] = answer
        return self.url(path)

    def slow(self, path: str, seconds: float) -> str:
        def answer(h):
            time.sleep(seconds)
            h.reply(200, b"late", {"Content-Type": "image/jpeg"})

        self.routes[path] = answer
        return self.url(path)

    def html(self, path: str) -> str:
        self.routes[path] = lambda h: h.reply(200, b"<!doctype html><html><body>Not found</body></html>",
                                              {"Content-Type": "text/html; charset=utf-8"})
        return self.url(path)

    def huge(self, path: str, size: int, *, declared: bool = True) -> str:
        """``size`` bytes; without ``declared`` the body is streamed with no Content-Length."""

        def answer(h):
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            if declared:
                h.send_header("Content-Length", str(size))
            else:
                h.send_header("Connection", "close")
                h.close_connection = True
            h.end_headers()
            chunk = b"\xff" * 65536
            try:
                for start in range(0, size, len(chunk)):
                    h.wfile.write(chunk[: min(len(chunk), size - start)])
            except OSError:
                pass  # the client stopped reading: that is the point

        self.routes[path] = answer
        return self.url(path)

    def stats(self) -> str:
        """``GET /_stats``: the counts as JSON, for a host run in another process (see ``main``)."""

        def answer(h):
            with self._lock:
                body = json.dumps({"requests": sum(self.requests.values()), "bodies": sum(self.bodies.values()),
                                   "max_active": self.max_active}).encode()
            h.reply(200, body, {"Content-Type": "application/json"})

        def reset(h):
            self.reset_counts()
            h.reply(204, b"", {})

        self.routes["/_stats"] = answer
        self.routes["/_reset"] = reset
        return self.url("/_stats")

    def _count_body(self, path: str) -> None:
        with self._lock:
            self.bodies[path] += 1


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # clients that hang up (timeouts under test) are expected
        pass


def _handler(host: ImageHost):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def reply(self, code: int, body: bytes, headers: dict) -> None:
            if host.cors:
                headers = {**headers, "Access-Control-Allow-Origin": "*"}
            try:
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)
            except OSError:  # the client gave up (a timeout under test): nothing to tell
                self.close_connection = True

        def do_OPTIONS(self):  # a CORS preflight: counted under "OPTIONS /path"
            with host._lock:
                host.requests["OPTIONS " + self.path.split("?", 1)[0]] += 1
            if not host.cors:
                self.reply(405, b"", {})
                return
            self.reply(204, b"", {"Access-Control-Allow-Methods": "GET", "Access-Control-Max-Age": "600",
                                  "Access-Control-Allow-Headers": self.headers.get("Access-Control-Request-Headers", "")})

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path.startswith("/_"):  # the host's own statistics: not counted, no latency
                host.routes[path](self)
                return
            with host._lock:
                host.requests[path] += 1
                host.headers[path].append(dict(self.headers))
                host.active += 1
                host.max_active = max(host.max_active, host.active)
            try:
                if host.latency:
                    time.sleep(host.latency)
                route = host.routes.get(path)
                if route is None:
                    self.reply(404, b"not found\n", {"Content-Type": "text/plain"})
                else:
                    route(self)
            finally:
                with host._lock:
                    host.active -= 1

    return Handler


def main(argv: list[str]) -> None:
    """``python tests/imagehost.py FOLDER LATENCY``: serve FOLDER's files as /NAME until killed, in a
    process of its own (a benchmark's CDN should not share the indexer's interpreter); prints the port."""
    from pathlib import Path

    host = ImageHost(latency=float(argv[1]))
    for path in sorted(Path(argv[0]).iterdir()):
        host.image("/" + path.name, path.read_bytes())
    host.stats()
    with host:
        print(host.server.server_address[1], flush=True)
        host.thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
