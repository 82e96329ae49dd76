"""What `vitsearch serve` tells Prometheus (``GET /metrics``), and the middleware that measures every request.

Instruments (one registry per service, so several apps in one process never share counters):

* ``vitsearch_http_requests_total{method,route,status}`` and
  ``vitsearch_http_request_duration_seconds{method,route}``: every answer, by route template
  (``/images/{image_id}``, never the id itself: the label set stays small); ``unmatched`` for
  requests answered outside the API's routes (unknown paths, CORS preflights, bodies refused by
  their Content-Length, FastAPI's /docs, /redoc and /openapi.json); a method other than the usual
  seven counts as ``other``;
* ``vitsearch_http_requests_in_flight``, ``vitsearch_http_response_bytes_total``;
* ``vitsearch_batch_size``: jobs per micro-batch; ``vitsearch_embed_seconds``: model time per batch;
  ``vitsearch_embedded_images_total``; ``vitsearch_search_seconds``: time per Milvus search call;
* ``vitsearch_store_errors_total{operation}``: Milvus calls that failed (a malformed filter is the
  client's error, not the store's, and is not counted);
* ``vitsearch_rows``: rows in the collection, read when scraped;
* ``vitsearch_info{version,model,collection}`` and the ``process_*`` collector (RSS, CPU, open files).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from .logs import ACCESS_LOGGER, access_line

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNMATCHED = "unmatched"
# request methods kept as labels; any other (a client may send any token) counts as OTHER, so that
# no client can grow the label set, and with it /metrics and the server's memory
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"


class Metrics:
    """The service's Prometheus instruments, in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("vitsearch_http_requests", "HTTP requests answered, by method, route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("vitsearch_http_request_duration_seconds",
                                 "Time from a request's arrival to the end of its answer",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("vitsearch_http_requests_in_flight", "Requests being answered now", registry=r)
        self.response_bytes = Counter("vitsearch_http_response_bytes", "Bytes of response bodies sent", registry=r)
        self.batch_size = Histogram("vitsearch_batch_size", "Jobs (searches and uploads) per micro-batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.embed_seconds = Histogram("vitsearch_embed_seconds", "Model time per micro-batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.embedded = Counter("vitsearch_embedded_images", "Images embedded", registry=r)
        self.search_seconds = Histogram("vitsearch_search_seconds",
                                        "Milvus search time per call (one call per filter in a micro-batch)",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("vitsearch_store_errors", "Milvus calls that failed, by operation",
                                    ["operation"], registry=r)
        self.rows = Gauge("vitsearch_rows", "Rows in the served collection (read when scraped)", registry=r)
        self.info = Info("vitsearch", "The served collection and model", registry=r)
        ProcessCollector(registry=r)

    def count_rows_with(self, fn: Callable[[], float]) -> None:
        """Read the row count from ``fn`` at each scrape (it should return NaN rather than raise)."""
        self.rows.set_function(fn)

    def observe_request(self, method: str, route: str, status: int, seconds: float, sent: int) -> None:
        method = method if method in METHODS else OTHER
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        self.response_bytes.inc(sent)

    def render(self) -> bytes:
        return generate_latest(self.registry)


CUT_SHORT = (b'{"detail":"the server shut down before this request finished: it may or may not have taken '
             b'effect; send it again (uploads and deletes are safe to repeat)"}')


def route_of(scope: dict) -> str:
    """The template of the route that answered (``/images/{image_id}``), or ``unmatched``."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class RequestObserver:
    """ASGI middleware around the whole app: counts and times every request for ``metrics`` and writes
    one access-log line for it (method, path, route, status, milliseconds, response bytes).

    A request that raised before its answer started is logged as 500. One that a shutdown cancelled
    (after ``--shutdown-timeout``) is answered 503 (when no answer had started) and logged so. Headers
    are never logged, so neither are API keys; nor are query strings.
    """

    def __init__(self, app, metrics: Metrics, logger: logging.Logger | None = None):
        self.app, self.metrics = app, metrics
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, sent = 0, 0

        async def observed(message):
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed)
        except asyncio.CancelledError:
            # uvicorn cancels a request only when its graceful shutdown times out: answer it, if it
            # has no answer yet, rather than let it end as a 500 with a traceback
            if status:
                raise
            status = 503
            await self._cut_short(observed)
        except BaseException:
            status = status or 500
            raise
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            method, route = scope.get("method", ""), route_of(scope)
            self.metrics.observe_request(method, route, status, seconds, sent)
            if self.log.isEnabledFor(logging.INFO):
                access_line(self.log, scope, route, status, seconds, sent)

    @staticmethod
    async def _cut_short(send) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):  # the connection may be gone: it ends anyway
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(CUT_SHORT)).encode()),
                (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": CUT_SHORT})
