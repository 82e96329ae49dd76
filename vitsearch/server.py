"""`vitsearch serve`: the HTTP API and the search page, on FastAPI.

One process loads the model once and opens the store once. Searches and uploads from concurrent
requests meet in a micro-batcher: whatever arrives while the encoder is busy is embedded in one batch
and searched in one Milvus call per filter, so concurrent clients share model calls and store calls.

Files are served by row id only: ``GET /images/{id}`` looks the id up in the collection and sends that
row's file; nothing named by the request is ever opened. Uploads are stored under the upload folder,
named by their content hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .api import VisualSearch, model_record
from .errors import FilterError, ImageError, StoreError, VitsearchError
from .fetch import MAX_IMAGE_BYTES, FetchError, Fetcher, FetchOptions, TooLargeError, is_http
from .images import load_image
from .indexer import user_fields
from .metadata import check_field, infer
from .report import THUMB, thumbnail
from .search import to_hits
from .store import path_id

MAX_UPLOAD_BYTES = MAX_IMAGE_BYTES  # also the limit of query images given by URL, and of indexed ones
MAX_RESULTS = 1000
_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}


class ApiError(VitsearchError):
    """An error with the HTTP status it answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def default_upload_dir() -> str:
    from .settings import data_dir

    return str(data_dir() / "uploads")


def default_thumbnail_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vitsearch", "thumbnails")


# -- micro-batching -------------------------------------------------------------------------------
_STOP = object()


class MicroBatcher:
    """Calls ``fn(items)`` on a worker thread with the items that ``submit`` received from any thread.

    A batch holds the first waiting item and whatever else arrives within ``max_wait`` seconds, up to
    ``max_batch``. ``fn`` returns one result per item; a result that is an exception is raised to that
    item's caller only. With ``max_batch=1`` every item runs on its own (the baseline of the benchmark).
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 32, max_wait: float = 0.002):
        self.fn, self.max_batch, self.max_wait = fn, max(1, max_batch), max(0.0, max_wait)
        self.queue: queue.Queue = queue.Queue()
        self.batches = self.items = 0
        self.thread = threading.Thread(target=self._loop, name="vitsearch-batcher", daemon=True)
        self.thread.start()

    def submit(self, item) -> Any:
        future: Future = Future()
        self.queue.put((item, future))
        return future.result()

    def close(self) -> None:
        self.queue.put(_STOP)
        self.thread.join(timeout=10)

    def _gather(self) -> tuple[list, bool]:
        first = self.queue.get()
        if first is _STOP:
            return [], True
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                left = deadline - time.monotonic()
                item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._gather()
            if not batch:
                continue
            self.batches, self.items = self.batches + 1, self.items + len(batch)
            try:
                results = self.fn([item for item, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of this batch
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


@dataclass
class _Job:
    """One request for the batcher: an image or a stored vector; ``k == 0`` means "embed only"."""

    image: Image.Image | None = None
    vector: list[float] | None = None
    k: int = 0
    filter: str | None = None
    exclude: int | None = None


# -- the service ----------------------------------------------------------------------------------
class Service:
    """Everything the endpoints share: the collection, the encoder, the batcher and the folders."""

    def __init__(
        self,
        search: VisualSearch,
        *,
        upload_dir: str | None = None,
        thumbnail_dir: str | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_batch: int = 32,
        max_wait: float = 0.002,
        read_timeout: float = 30.0,
        allow_private_urls: bool = False,
    ):
        self.vs = search
        # Query images by URL: public addresses only unless allowed, the upload limit, one quick retry
        self.fetcher = Fetcher(FetchOptions(max_bytes=max_upload_bytes, allow_private=allow_private_urls,
                                            timeout=read_timeout, retries=1, max_wait=5.0))
        self.read_timeout = read_timeout
        self.upload_dir = Path(os.path.abspath(upload_dir or default_upload_dir()))
        self.thumbnail_dir = Path(os.path.abspath(thumbnail_dir or default_thumbnail_dir()))
        self.max_upload_bytes = max_upload_bytes
        self.lock = threading.RLock()  # one store call at a time: Milvus Lite's client is not thread-safe
        self.started = time.time()
        self.counters = {"searches": 0, "uploads": 0, "deletes": 0}
        self._count_lock = threading.Lock()
        self._open()
        self.batcher = MicroBatcher(self._run_jobs, max_batch=max_batch, max_wait=max_wait)

    def _open(self) -> None:
        """Open the store and load the model now, so that the first request is as fast as the next."""
        store = self.vs.store
        if store.exists():
            self.vs._require()
        else:
            store.create(model_record(self.vs.spec))
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.thumbnail_dir.mkdir(parents=True, exist_ok=True)
        self.vs.encoder.encode([Image.new("RGB", (32, 32), (128, 128, 128))])  # warm-up

    def close(self) -> None:
        self.batcher.close()
        self.fetcher.close()
        self.vs.close()

    # -- batch work (on the batcher's thread) ---------------------------------------------------
    def _run_jobs(self, jobs: list[_Job]) -> list:
        with_image = [j for j in jobs if j.image is not None]
        if with_image:
            vectors = self.vs.encoder.encode([j.image for j in with_image])
            for job, vector in zip(with_image, vectors):
                job.vector = vector.tolist()
        results: list = [None] * len(jobs)
        by_filter: dict[str | None, list[int]] = {}
        for i, job in enumerate(jobs):
            if job.k == 0:
                results[i] = job.vector
            else:
                by_filter.setdefault(job.filter, []).append(i)
        for filter_, members in by_filter.items():
            limit = max(jobs[i].k + (jobs[i].exclude is not None) for i in members)
            try:
                with self.lock:
                    found = self.vs.store.search([jobs[i].vector for i in members], limit, filter=filter_)
            except FilterError as exc:
                found = [ApiError(400, str(exc))] * len(members)
            except StoreError as exc:
                found = [ApiError(503, str(exc))] * len(members)
            for i, rows in zip(members, found):
                if isinstance(rows, Exception):
                    results[i] = rows
                else:
                    rows = [r for r in rows if r["id"] != jobs[i].exclude][: jobs[i].k]
                    results[i] = rows
        return results

    # -- operations (on request threads) --------------------------------------------------------
    def decode(self, data: bytes) -> Image.Image:
        """The uploaded bytes as an RGB image: 415 when they are no image format, 400 when broken."""
        return self._decode(data)[0]

    @staticmethod
    def _decode(data: bytes) -> tuple[Image.Image, str]:
        """(RGB image, format): the format sniffed from the content, then the pixels decoded."""
        fmt = sniff(data)
        try:
            return load_image(data), fmt
        except ImageError as exc:
            raise ApiError(400, f"the image cannot be decoded: {exc}") from None

    def fetch(self, url: str) -> bytes:
        """The bytes of a query image given by URL (http/https; see ``allow_private_urls``)."""
        if not is_http(url):  # never the server's own files or buckets
            raise ApiError(400, "url must be an http:// or https:// URL")
        try:
            fetched = self.fetcher.open(url)
        except TooLargeError as exc:
            raise ApiError(413, f"the image at the URL is {exc}") from None
        except FetchError as exc:
            raise ApiError(400, f"cannot fetch {url}: {exc}") from None
        return fetched.data

    def search(self, image: Image.Image | None = None, *, id: int | None = None, k: int = 10,
               filter: str | None = None) -> list[dict]:
        check_k(k)
        filter = (filter or "").strip() or None
        if image is not None:
            job = _Job(image=image, k=k, filter=filter)
        else:
            row = self.row(id, ["*"])
            if "vector" not in row:
                raise ApiError(500, f"the row of id {id} has no vector")
            job = _Job(vector=row["vector"], k=k, filter=filter, exclude=row["id"])
        rows = self.batcher.submit(job)
        self._count("searches")
        return [self.describe(hit.as_dict()) for hit in to_hits(rows)]

    def row(self, id: int | None, fields: list[str] | None = None) -> dict:
        """The stored row of ``id``: ``fields`` (default: vitsearch's own, no vector, no metadata); 404 if none."""
        if id is None:
            raise ApiError(400, "give an image to search with, or the id of an indexed image")
        try:
            with self.lock:
                rows = self.vs.store.get([int(id)], fields)
        except StoreError as exc:
            raise ApiError(503, str(exc)) from None
        if not rows:
            raise ApiError(404, f"no image with id {id} in collection {self.vs.store.collection!r}")
        return dict(rows[0])

    def describe(self, row: dict) -> dict:
        """A row or hit as the API shows it: no vector, and the URLs of its file and thumbnail.

        The id is sent as a string: it is a 64-bit integer, and JavaScript's numbers would round it.
        """
        out = {k: v for k, v in row.items() if k != "vector" and not k.startswith("$")}
        out["id"] = str(row["id"])
        out["image_url"] = f"/images/{row['id']}"
        out["thumbnail_url"] = f"/thumbnails/{row['id']}"
        if is_http(str(row.get("path", ""))):  # an image indexed from a URL: the browser loads it from there
            out["image_url"] = out["thumbnail_url"] = row["path"]
        return out

    def add(self, data: bytes, fields: dict[str, Any]) -> tuple[dict, bool]:
        """Store an uploaded image under the upload folder and index it; returns (row, created)."""
        for name in fields:
            try:
                check_field(name, "field")
            except VitsearchError as exc:
                raise ApiError(400, str(exc)) from None
        image, fmt = self._decode(data)
        ext = _FORMAT_EXT[fmt]
        sha = hashlib.sha256(data).hexdigest()
        path = self.upload_dir / sha[:2] / f"{sha}{ext}"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        vector = self.batcher.submit(_Job(image=image))
        stat = path.stat()
        row_id = path_id(str(path))
        with self.lock:
            old = self.vs.store.get([row_id], ["*"])
            kept = user_fields(old[0]) if old else {}
            row = {
                **kept, **fields, "id": row_id, "path": str(path), "size": stat.st_size, "mtime": stat.st_mtime,
                "sha256": sha, "width": image.width, "height": image.height, "vector": [float(v) for v in vector],
            }
            self.vs.store.upsert([row])
        self._count("uploads")
        return self.describe(row), not old

    def remove(self, id: int) -> dict:
        row = self.row(id)
        with self.lock:
            self.vs.store.delete([row["id"]])
        path = Path(row["path"])
        if self.upload_dir in path.parents:  # an uploaded file goes with its row; indexed folders stay as they are
            path.unlink(missing_ok=True)
        for cached in self.thumbnail_dir.glob(f"{row['id']}-*.jpg"):
            cached.unlink(missing_ok=True)
        self._count("deletes")
        return {"id": str(row["id"]), "path": row["path"], "deleted": True}

    def file_of(self, id: int) -> tuple[str, str]:
        row = self.row(id)
        path = row["path"]
        if not os.path.isfile(path):
            raise ApiError(404, f"the file of image {id} is gone from {path}")
        return path, _MEDIA_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")

    def thumbnail_of(self, id: int) -> str:
        """The cached JPEG thumbnail of a row, made on first use (keyed by id and content hash)."""
        row = self.row(id)
        cached = self.thumbnail_dir / f"{row['id']}-{(row.get('sha256') or 'none')[:16]}.jpg"
        if not cached.is_file():
            if not os.path.isfile(row["path"]):
                raise ApiError(404, f"the file of image {id} is gone from {row['path']}")
            tmp = cached.with_name(f".{cached.name}.{threading.get_ident()}.tmp")
            thumbnail(row["path"], THUMB).save(tmp, "JPEG", quality=85)
            os.replace(tmp, cached)
        return str(cached)

    def _count(self, what: str) -> None:
        with self._count_lock:
            self.counters[what] += 1

    def stats(self) -> dict:
        info = self.vs.info()
        batches = self.batcher.batches
        return {
            "count": info["count"],
            "collection": info["collection"],
            "uri": info["uri"],
            "model": self.vs.spec.name,
            "dimension": self.vs.spec.dim,
            "image_size": max(self.vs.spec.preprocessing.input_size),
            "device": self.vs.encoder.device,
            "uptime_s": round(time.time() - self.started, 1),
            "vitsearch": __version__,
            **self.counters,
            "mean_batch": round(self.batcher.items / batches, 2) if batches else None,
        }


def sniff(data: bytes) -> str:
    """The image format of ``data``, from its content (never from a name or a header): 415 when none."""
    if not data:
        raise ApiError(400, "the upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
    except UnidentifiedImageError:
        raise ApiError(415, "the upload is not an image in a format vitsearch reads "
                            "(JPEG, PNG, WebP, GIF, BMP, TIFF)") from None
    except Image.DecompressionBombError as exc:
        raise ApiError(400, f"the image has too many pixels: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types on corrupt headers
        raise ApiError(400, f"the image cannot be read: {exc}") from None
    if fmt not in _FORMAT_EXT:
        raise ApiError(415, f"{fmt} images are not supported (JPEG, PNG, WebP, GIF, BMP, TIFF are)")
    return fmt


def check_k(k: int) -> int:
    if not 1 <= k <= MAX_RESULTS:
        raise ApiError(400, f"k must be between 1 and {MAX_RESULTS}, not {k}")
    return k


def parse_fields(form: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """Upload form fields other than the file, typed like CSV metadata cells (``Service.add`` checks the names)."""
    fields = {}
    for name, value in form:
        if name == "image" or not isinstance(value, str):
            continue
        typed = infer(value)
        if typed is not None:
            fields[name] = typed
    return fields


class _BodyLimit:
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


def _protocol_with_head_timeout(seconds: float):
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


def page() -> str:
    return resources.files("vitsearch").joinpath("static", "index.html").read_text(encoding="utf-8")


# -- the FastAPI application ----------------------------------------------------------------------
def create_app(service: Service):
    """The ASGI app around ``service``: what `vitsearch serve` runs, and what tests drive."""
    app = FastAPI(
        title="vitsearch",
        version=__version__,
        description="Search a collection of images by example image.",
    )
    app.state.service = service
    too_large = f"the upload is larger than the limit of {service.max_upload_bytes / 2**20:.3g} MB"
    # the limit on the whole body leaves room for the form fields around the file
    app.add_middleware(_BodyLimit, limit=service.max_upload_bytes + 64 * 1024, message=too_large,
                       timeout=service.read_timeout)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(VitsearchError)
    async def _vitsearch_error(request: Request, exc: VitsearchError):
        status = 503 if isinstance(exc, StoreError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 413:
            detail = too_large
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    async def _read_upload(upload: Any) -> bytes:
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "send the image as a multipart file field named 'image'")
        data = await upload.read(service.max_upload_bytes + 1)
        if len(data) > service.max_upload_bytes:
            raise ApiError(413, too_large)
        return data

    def _int(value: Any, name: str) -> int:
        try:
            return int(str(value).strip())
        except (TypeError, ValueError):
            raise ApiError(400, f"{name} must be a whole number, not {value!r}") from None

    def _id(text: str) -> int:
        if not text.isdigit() and not (text.startswith("-") and text[1:].isdigit()):
            raise ApiError(404, f"no image with id {text!r}")
        return int(text)

    search_body = {
        "requestBody": {
            "content": {
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"},
                                   "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": MAX_RESULTS},
                                   "filter": {"type": "string", "description": "Milvus boolean expression"}},
                }},
                "application/json": {"schema": {
                    "type": "object",
                    "properties": {"id": {"type": "string",
                                          "description": "an indexed image (more like this); a string or an integer"},
                                   "url": {"type": "string", "description": "an image to fetch (http or https; "
                                           "public addresses only unless serve --allow-private-urls)"},
                                   "k": {"type": "integer", "default": 10}, "filter": {"type": "string"}},
                }},
            }
        }
    }

    @app.post("/search", openapi_extra=search_body, summary="Images most like an uploaded one (or an indexed one)")
    async def search(request: Request):
        started = time.perf_counter()
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=32)
            data = await _read_upload(form.get("image"))
            k = _int(form.get("k", 10), "k")
            filter_ = form.get("filter")
            image = await run_in_threadpool(service.decode, data)
            results = await run_in_threadpool(service.search, image, k=k, filter=filter_)
        elif kind.startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                raise ApiError(400, "the body is not valid JSON") from None
            if not isinstance(body, dict) or ("id" in body) == ("url" in body):
                raise ApiError(400, 'send {"id": <indexed image id>} or {"url": <image URL>} (with "k": 10, '
                                    '"filter": "..."), or a multipart upload')
            k = _int(body.get("k", 10), "k")
            filter_ = body.get("filter")
            if filter_ is not None and not isinstance(filter_, str):
                raise ApiError(400, "filter must be a string")
            if "url" in body:
                if not isinstance(body["url"], str) or not body["url"].strip():
                    raise ApiError(400, "url must be a non-empty string")
                check_k(k)
                data = await run_in_threadpool(service.fetch, body["url"].strip())
                image = await run_in_threadpool(service.decode, data)
                results = await run_in_threadpool(service.search, image, k=k, filter=filter_)
            else:
                results = await run_in_threadpool(
                    service.search, None, id=_int(body["id"], "id"), k=k, filter=filter_
                )
        else:
            raise ApiError(415, "send multipart/form-data with an 'image' file, or JSON with an 'id' or a 'url'")
        return {"results": results, "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    upload_body = {"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary"}},
        "additionalProperties": {"type": "string", "description": "metadata fields, typed like CSV cells"},
    }}}}}

    @app.post("/images", status_code=201, openapi_extra=upload_body, summary="Add an uploaded image to the collection")
    async def add_image(request: Request):
        kind = request.headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            raise ApiError(415, "send multipart/form-data with an 'image' file and metadata fields")
        form = await request.form(max_files=1, max_fields=64)
        data = await _read_upload(form.get("image"))
        fields = parse_fields(form.multi_items())
        row, created = await run_in_threadpool(service.add, data, fields)
        return JSONResponse(row, status_code=201 if created else 200)

    @app.get("/images/{image_id}", summary="The file of an indexed image")
    def get_image(image_id: str):
        path, media = service.file_of(_id(image_id))
        return FileResponse(path, media_type=media)

    @app.delete("/images/{image_id}", summary="Remove an image from the collection")
    def delete_image(image_id: str):
        return service.remove(_id(image_id))

    @app.get("/thumbnails/{image_id}", summary="A JPEG thumbnail of an indexed image (cached)")
    def get_thumbnail(image_id: str):
        return FileResponse(service.thumbnail_of(_id(image_id)), media_type="image/jpeg",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/rows/{image_id}", summary="The stored fields of an indexed image")
    def get_row(image_id: str):
        return service.describe(service.row(_id(image_id), ["*"]))

    @app.get("/healthz", summary="Liveness: the store answers")
    def healthz():
        try:
            with service.lock:
                service.vs.store.count()
        except StoreError as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return {"status": "ok"}

    @app.get("/stats", summary="Count, model, dimension, uptime")
    def stats():
        with service.lock:
            return service.stats()

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page():
        return HTMLResponse(page())

    return app


def serve(
    service: Service, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", max_connections: int = 256
) -> None:
    """Run the service with uvicorn: idle keep-alive connections close after 5 s, request heads and
    body chunks must arrive within ``service.read_timeout``, and connections beyond
    ``max_connections`` get 503 at once."""
    import uvicorn

    try:
        http = _protocol_with_head_timeout(service.read_timeout)
    except ImportError:  # pragma: no cover - a uvicorn without its h11 protocol module
        http = "auto"
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                limit_concurrency=max_connections, http=http)


