"""`vitsearch serve`: the HTTP API and the search page, on FastAPI.

One process loads the model once and opens the store once. Searches and uploads from concurrent
requests meet in a micro-batcher: whatever arrives while the encoder is busy is embedded in one batch
and searched in one Milvus call per filter, so concurrent clients share model calls and store calls.

Files are served by row id only: ``GET /images/{id}`` looks the id up in the collection and sends that
row's file; nothing named by the request is ever opened. Uploads are stored under the upload folder,
named by their content hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .api import VisualSearch
from .errors import FilterError, ImageError, StoreError, VitsearchError
from .exif import read_exif
from .fetch import MAX_IMAGE_BYTES, Fetcher, FetchError, FetchOptions, TooLargeError, is_http
from .filters import PhotoFilter
from .formats import register_plugins
from .images import load_image
from .metadata import check_field, infer
from .report import THUMB, thumbnail
from .search import above, check_min_score, search_until, to_hits
from .serving import auth, logs
from .serving.auth import OPEN, READ, WRITE, Keys, access
from .serving.batcher import MicroBatcher
from .serving.cors import add_cors
from .serving.errors import ApiError
from .serving.guards import BodyLimit
from .serving.metrics import Metrics, RequestObserver
from .store import HIDDEN_FIELDS

__all__ = ["ApiError", "MicroBatcher", "Service", "create_app", "serve"]

MAX_UPLOAD_BYTES = MAX_IMAGE_BYTES  # also the limit of query images given by URL, and of indexed ones
MAX_RESULTS = 1000
# Uploads with more pixels than this decode one at a time: a small PNG of 100 MP takes about 0.5 GB
# to decode (a JPEG is decoded at reduced scale and costs little), so a burst of them must not
# multiply that by the number of request threads
LARGE_PIXELS = 16_000_000
# Searches by URL downloading at once; more are answered 503 at once. A download holds a request
# thread for up to twice the read timeout (one retry), so a host that never answers must not be
# able to take every thread (40) and stall health checks and uploads behind it.
URL_FETCHES = 8
_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif",
               "HEIF": ".heic", "AVIF": ".avif"}
_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
                ".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif"}
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC"
_PHOTO_PARAMS = ("taken_after", "taken_before", "near", "camera")


def default_upload_dir() -> str:
    from .settings import data_dir

    return str(data_dir() / "uploads")


def default_thumbnail_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vitsearch", "thumbnails")


@dataclass
class _Job:
    """One request for the batcher: an image or a stored vector; ``k == 0`` means "embed only"."""

    image: Image.Image | None = None
    vector: list[float] | None = None
    k: int = 0
    filter: str | None = None
    exclude: int | None = None
    min_score: float | None = None


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
        metrics: Metrics | None = None,
    ):
        self.vs = search
        self.metrics = metrics or Metrics()
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
        self._active = 0  # operations under way (see ``_operation``)
        self._idle = threading.Condition()
        self._large_decode = threading.Lock()  # see LARGE_PIXELS
        self._url_fetches = threading.BoundedSemaphore(URL_FETCHES)
        self.closing = self._closed = False
        self._open()
        self.batcher = MicroBatcher(self._run_jobs, max_batch=max_batch, max_wait=max_wait)
        self.metrics.info.info({"version": __version__, "model": self.vs.spec.name,
                                "collection": self.vs.store.collection})
        self.metrics.count_rows_with(self.row_count)

    def _open(self) -> None:
        """Open the store and load the model now, so that the first request is as fast as the next."""
        self.vs.ensure_collection()
        for what, folder in (("upload", self.upload_dir), ("thumbnail", self.thumbnail_dir)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise VitsearchError(f"cannot create the {what} folder {folder}: {exc.strerror or exc}") from None
            if not os.access(folder, os.W_OK | os.X_OK):
                raise VitsearchError(f"the {what} folder {folder} is not writable by this user")
        self.vs.encoder.encode([Image.new("RGB", (32, 32), (128, 128, 128))])  # warm-up

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new operations (503), wait up to ``timeout`` seconds for those under way (a request
        cancelled by a shutdown may still be running on its thread), then flush the store and close it."""
        with self._idle:
            if self._closed:
                return
            self.closing = self._closed = True
            self._idle.wait_for(lambda: self._active == 0, timeout=timeout)
        self.batcher.close()
        self.fetcher.close()
        try:
            self._store("flush", self.vs.store.flush)
        except StoreError as exc:
            logging.getLogger(logs.SERVER_LOGGER).warning("the store could not be flushed: %s", exc)
        self.vs.close()

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        """Count an operation that uses the store, so that ``close`` waits for it; 503 once closing."""
        with self._idle:
            if self.closing:
                raise ApiError(503, "the server is shutting down")
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _store(self, operation: str, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the store, one call at a time; a failure is counted by operation
        (a malformed filter is the client's error and is not)."""
        with self.lock:
            try:
                return fn(*args, **kwargs)
            except FilterError:
                raise
            except StoreError:
                self.metrics.store_errors.labels(operation).inc()
                raise

    def row_count(self) -> float:
        """Rows in the collection, NaN when the store does not answer (for the metrics)."""
        try:
            return float(self._store("count", self.vs.store.count))
        except StoreError:
            return float("nan")

    def health(self) -> str | None:
        """None when the store answers, else why not."""
        try:
            self._store("count", self.vs.store.count)
        except StoreError as exc:
            return str(exc)
        return None

    # -- batch work (on the batcher's thread) ---------------------------------------------------
    def _run_jobs(self, jobs: list[_Job]) -> list:
        self.metrics.batch_size.observe(len(jobs))
        with_image = [j for j in jobs if j.image is not None]
        if with_image:
            started = time.perf_counter()
            vectors = self.vs.encoder.encode([j.image for j in with_image])
            self.metrics.embed_seconds.observe(time.perf_counter() - started)
            self.metrics.embedded.inc(len(with_image))
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
            started = time.perf_counter()
            try:
                found = self._store("search", self.vs.store.search, [jobs[i].vector for i in members], limit,
                                    filter=filter_)
            except FilterError as exc:
                found = [ApiError(400, str(exc))] * len(members)
            except StoreError as exc:
                found = [ApiError(503, str(exc))] * len(members)
            finally:
                self.metrics.search_seconds.observe(time.perf_counter() - started)
            for i, rows in zip(members, found):
                if isinstance(rows, Exception):
                    results[i] = rows
                else:
                    rows = [r for r in rows if r["id"] != jobs[i].exclude][: jobs[i].k]
                    results[i] = above(rows, jobs[i].min_score)
        return results

    # -- operations (on request threads) --------------------------------------------------------
    def decode(self, data: bytes) -> Image.Image:
        """The uploaded bytes as an RGB image: 415 when they are no image format, 400 when broken."""
        return self._decode(data)[0]

    def _decode(self, data: bytes) -> tuple[Image.Image, str]:
        """(RGB image, format): the format sniffed from the content, then the pixels decoded as the
        indexer decodes a file (a large JPEG or HEIC at reduced scale), so an upload embeds to the
        vector its file gets from ``vitsearch index``; ``info['vitsearch.size']`` is its own size."""
        fmt, pixels = probe(data)
        try:
            with self._large_decode if pixels > LARGE_PIXELS else contextlib.nullcontext():
                return load_image(data, draft=self.vs.encoder.preprocessing.draft_size), fmt
        except ImageError as exc:
            raise ApiError(400, f"the image cannot be decoded: {exc}") from None

    def fetch(self, url: str) -> bytes:
        """The bytes of a query image given by URL (http/https; see ``allow_private_urls``). An operation:
        refused once the server is closing, and waited for by :meth:`close` (which closes the fetcher)."""
        if not is_http(url):  # never the server's own files or buckets
            raise ApiError(400, "url must be an http:// or https:// URL")
        if not self._url_fetches.acquire(blocking=False):
            raise ApiError(503, f"{URL_FETCHES} searches by URL are downloading already: try again shortly",
                           headers={"Retry-After": "2"})
        try:
            with self._operation():
                fetched = self.fetcher.open(url)
        except TooLargeError as exc:
            raise ApiError(413, f"the image at the URL is {exc}") from None
        except FetchError as exc:
            raise ApiError(400, f"cannot fetch {url}: {exc}") from None
        finally:
            self._url_fetches.release()
        return fetched.data

    def search(self, image: Image.Image | None = None, *, id: int | None = None, k: int = 10,
               filter: str | None = None, photo: PhotoFilter | None = None, min_score: float | None = None) -> list[dict]:
        """``photo``: when, where, with which camera (see :mod:`vitsearch.filters`), combined with ``filter``;
        ``min_score``: only hits at least that similar."""
        check_k(k)
        min_score = check_min_score(min_score)
        filter = (filter or "").strip() or None
        photo = photo or None
        if photo is not None:
            filter = photo.combine(filter)
        if image is not None:
            job = _Job(image=image, k=k, filter=filter, min_score=min_score)
        else:
            row = self.row(id, ["*"])
            if "vector" not in row:
                raise ApiError(500, f"the row of id {id} has no vector")
            job = _Job(vector=row["vector"], k=k, filter=filter, exclude=row["id"], min_score=min_score)
        with self._operation():
            rows = self.batcher.submit(job) if photo is None or photo.exact else self._search_checked(job, photo)
        self._count("searches")
        return [self.describe(hit.as_dict()) for hit in to_hits(rows)]

    def _search_checked(self, job: _Job, photo: PhotoFilter) -> list[dict]:
        """A search whose rows ``photo`` must still check (``near``): the batcher only embeds, and more
        candidates are fetched until ``k`` pass."""
        if job.vector is None:
            job.vector = self.batcher.submit(_Job(image=job.image))

        def select(_, rows):
            return [r for r in rows if r["id"] != job.exclude and photo.accepts(r)][: job.k]

        try:
            with self.lock:
                return search_until(self.vs.store, [job.vector], job.k, select, job.filter, job.min_score)[0]
        except FilterError as exc:
            raise ApiError(400, str(exc)) from None
        except StoreError as exc:
            raise ApiError(503, str(exc)) from None

    def row(self, id: int | None, fields: list[str] | None = None) -> dict:
        """The stored row of ``id``: ``fields`` (default: vitsearch's own, no vector, no metadata); 404 if none."""
        if id is None:
            raise ApiError(400, "give an image to search with, or the id of an indexed image")
        try:
            rows = self._store("get", self.vs.store.get, [int(id)], fields)
        except StoreError as exc:
            raise ApiError(503, str(exc)) from None
        if not rows:
            raise ApiError(404, f"no image with id {id} in collection {self.vs.store.collection!r}")
        return dict(rows[0])

    def describe(self, row: dict) -> dict:
        """A row or hit as the API shows it: no vector, and the URLs of its file and thumbnail.

        The id is sent as a string: it is a 64-bit integer, and JavaScript's numbers would round it.
        """
        out = {k: v for k, v in row.items()
               if k != "vector" and k not in HIDDEN_FIELDS and v is not None and not k.startswith("$")}
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
        with self._operation():
            written = _keep(path, data)  # an OSError: the upload folder is broken (the handler answers 500)
            try:
                vector = self.batcher.submit(_Job(image=image))
                exif = read_exif(data)
                with self.lock:  # a delete of the same content meanwhile took the file: put it back
                    written = _keep(path, data) or written
                    width, height = image.info.get("vitsearch.size", image.size)  # upright, not the draft's size
                    row, created = self._store("upsert", self.vs.put, path, vector, sha256=sha, width=width,
                                               height=height, exif=exif, fields=fields)
            except BaseException:
                if written:  # refused whole: no file is left behind without its row
                    path.unlink(missing_ok=True)
                raise
        self._count("uploads")
        return self.describe(row), created

    def remove(self, id: int) -> dict:
        with self._operation(), self.lock:  # the row and its file go together (see ``add``)
            row = self.row(id)
            self._store("delete", self.vs.store.delete, [row["id"]])
            path = Path(row["path"])
            if self.upload_dir in path.parents:  # an uploaded file goes with its row; indexed folders stay
                path.unlink(missing_ok=True)
        for cached in self.thumbnail_dir.glob(f"{row['id']}-*.jpg"):
            cached.unlink(missing_ok=True)
        self._count("deletes")
        return {"id": str(row["id"]), "path": row["path"], "deleted": True}

    def file_of(self, id: int) -> tuple[str, str]:
        """(path, media type) of a row's file; a URL as it is, for a row indexed from one."""
        row = self.row(id)
        path = row["path"]
        if is_http(path):
            return path, ""
        if not os.path.isfile(path):
            raise ApiError(404, f"the file of image {id} is gone from {path}")
        return path, _MEDIA_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")

    def thumbnail_of(self, id: int) -> str:
        """The cached JPEG thumbnail of a row, made on first use (keyed by id and content hash)."""
        row = self.row(id)
        if is_http(row["path"]):  # indexed from a URL: no copy here to make one from
            return row["path"]
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
        info = self._store("info", self.vs.info, exif=False)
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


def _keep(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless a file is there (atomically: never a partial file); True if written."""
    if path.is_file():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def probe(data: bytes) -> tuple[str, int]:
    """(format, pixels) of ``data``, the format from its content (never from a name or a header):
    415 when none, 400 when its header is broken or names too many pixels."""
    if not data:
        raise ApiError(400, "the upload is empty")
    register_plugins()  # HEIC, when pillow-heif is installed
    try:
        with Image.open(io.BytesIO(data)) as opened:
            fmt, (width, height) = opened.format, opened.size
    except UnidentifiedImageError:
        raise ApiError(415, f"the upload is not an image in a format vitsearch reads ({_FORMAT_NAMES})") from None
    except Image.DecompressionBombError as exc:
        raise ApiError(400, f"the image has too many pixels: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types on corrupt headers
        raise ApiError(400, f"the image cannot be read: {exc}") from None
    if fmt not in _FORMAT_EXT:
        raise ApiError(415, f"{fmt} images are not supported ({_FORMAT_NAMES} are)")
    return fmt, width * height


def _photo(params) -> PhotoFilter:
    """The when/where/camera filter of a search request's fields (form or JSON); 400 when one is wrong."""
    values = {}
    for name in _PHOTO_PARAMS:
        value = params.get(name)
        ok = (str, list) if name == "near" else (str,) if name == "camera" else (str, int, float)
        if value is not None and (not isinstance(value, ok) or isinstance(value, bool)):
            raise ApiError(400, f"{name} must be a string, not {value!r}")
        values[name] = value
    try:
        return PhotoFilter.build(**values)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


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


# The error answers of each operation, for its OpenAPI document (FastAPI would list a 422 that the
# server never sends: its own checks answer 400)
_STORE_DOWN = "the store does not answer, or the server is shutting down"
_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/search"): {400: "a broken image or JSON body, or a k, min_score, filter, photo filter or URL "
                               "that makes no sense or cannot be fetched",
                          404: "no image with that id", 413: "the upload (or the image at the URL) is over the limit",
                          415: "not an image format vitsearch reads, or a body neither multipart nor JSON",
                          503: _STORE_DOWN + ", or too many searches by URL are downloading (Retry-After)"},
    ("post", "/images"): {400: "a broken image, or a metadata field name that cannot be stored",
                          413: "the upload is over the limit", 415: "not an image format vitsearch reads",
                          503: _STORE_DOWN},
    ("get", "/images/{image_id}"): {404: "no image with that id, or its file is gone", 503: _STORE_DOWN},
    ("delete", "/images/{image_id}"): {404: "no image with that id", 503: _STORE_DOWN},
    ("get", "/thumbnails/{image_id}"): {404: "no image with that id, or its file is gone", 503: _STORE_DOWN},
    ("get", "/rows/{image_id}"): {404: "no image with that id", 503: _STORE_DOWN},
    ("get", "/healthz"): {503: "the store does not answer"},
}


def _document_errors(app) -> None:
    """Each operation's error answers in the app's OpenAPI document: ``{"detail": "..."}`` with the
    statuses of ``_ERRORS``, and 401 where this server wants a key (see ``auth.document``)."""
    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = plain()
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                answers = operation.setdefault("responses", {})
                answers.pop("422", None)
                codes = dict(_ERRORS.get((method, path), {}))
                if "security" in operation:
                    codes[401] = "no API key, or not a valid one (WWW-Authenticate says which)"
                for code, why in sorted(codes.items()):
                    answers[str(code)] = {"description": why, **error}
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas["Error"] = {"type": "object", "required": ["detail"],
                            "properties": {"detail": {"type": "string", "description": "what is wrong, for people"}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def page() -> str:
    return resources.files("vitsearch").joinpath("static", "index.html").read_text(encoding="utf-8")


# -- the FastAPI application ----------------------------------------------------------------------
def create_app(service: Service, *, keys: Keys | None = None, cors_origins: Sequence[str] = (),
               access_log: logging.Logger | None = None):
    """The ASGI app around ``service``: what `vitsearch serve` runs, and what tests drive.

    Around the routes, from the outside in: every request is measured and logged (``RequestObserver``),
    answered for the CORS origins given (none: no CORS), and its body bounded (``BodyLimit``); then
    one app-wide dependency checks the API key the route's access level needs (``auth``). Each route
    names its level with ``openapi_extra=access(...)``; one that names none is a write.
    """
    keys = keys or Keys()
    app = FastAPI(
        title="vitsearch",
        version=__version__,
        description="Search a collection of images by example image.",
        dependencies=[Depends(auth.require_key(keys))],
    )
    app.state.service = service
    app.state.keys = keys
    auth.document(app, keys)
    _document_errors(app)
    too_large = f"the upload is larger than the limit of {service.max_upload_bytes / 2**20:.3g} MB"
    # the limit on the whole body leaves room for the form fields around the file
    app.add_middleware(BodyLimit, limit=service.max_upload_bytes + 64 * 1024, message=too_large,
                       timeout=service.read_timeout)
    add_cors(app, cors_origins)
    app.add_middleware(RequestObserver, metrics=service.metrics, logger=access_log)  # the last added is outermost

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(VitsearchError)
    async def _vitsearch_error(request: Request, exc: VitsearchError):
        status = 503 if isinstance(exc, StoreError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # a bug, or the server's own trouble (a full disk, an upload folder that went read-only): the
        # traceback goes to the server's log (the exception is raised on after this answer), the client
        # gets JSON like every other error, without the server's internals
        reason = f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""
        return JSONResponse({"detail": f"internal error{reason} (see the server's log)"}, status_code=500)

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

    def _score(value: Any) -> float | None:
        """A request's ``min_score`` (a number, or a form field's text), checked by ``Service.search``."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        wrong = ApiError(400, f"min_score must be a number between -1 and 1, not {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise wrong
        try:
            return float(value)  # a form field's text too ("0.5", " 0.5 ")
        except ValueError:
            raise wrong from None

    def _id(text: str) -> int:
        digits = text.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()):  # not "²" or "٣", which isdigit() also accepts
            raise ApiError(404, f"no image with id {text!r}")
        return int(text)

    photo_params = {
        "taken_after": {"type": "string", "description": "EXIF taken_at at or after this date/time, e.g. 2024-06-01"},
        "taken_before": {"type": "string", "description": "EXIF taken_at before this date/time"},
        "near": {"type": "string", "description": "LAT,LON,KM: EXIF GPS position within KM of LAT,LON"},
        "camera": {"type": "string", "description": "words of the camera make or model, any case"},
    }
    min_score_param = {"type": "number", "minimum": -1, "maximum": 1,
                       "description": "only hits at least this similar (cosine); fewer than k, or none, when "
                                      "nothing is that close"}
    search_body = {
        "requestBody": {
            "content": {
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"},
                                   "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": MAX_RESULTS},
                                   "filter": {"type": "string", "description": "Milvus boolean expression"},
                                   "min_score": min_score_param, **photo_params},
                }},
                "application/json": {"schema": {
                    "type": "object",
                    "properties": {"id": {"type": "string",
                                          "description": "an indexed image (more like this); a string or an integer"},
                                   "url": {"type": "string", "description": "an image to fetch (http or https; "
                                           "public addresses only unless serve --allow-private-urls)"},
                                   "k": {"type": "integer", "default": 10}, "filter": {"type": "string"},
                                   "min_score": min_score_param, **photo_params},
                }},
            }
        }
    }

    @app.post("/search", openapi_extra={**search_body, **access(READ)}, summary="Images most like an uploaded one (or an indexed one, or one at a URL)")
    async def search(request: Request):
        started = time.perf_counter()
        kind = request.headers.get("content-type", "").lower()  # media types are case-insensitive
        if kind.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=32)
            data = await _read_upload(form.get("image"))
            k = _int(form.get("k", 10), "k")
            filter_ = form.get("filter")
            min_score = _score(form.get("min_score"))
            photo = _photo(form)
            image = await run_in_threadpool(service.decode, data)
            results = await run_in_threadpool(service.search, image, k=k, filter=filter_, photo=photo,
                                              min_score=min_score)
        elif kind.startswith("application/json"):
            try:
                body = await request.json()
            except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
                raise ApiError(400, "the body is not valid JSON") from None
            if not isinstance(body, dict) or ("id" in body) == ("url" in body):
                raise ApiError(400, 'send {"id": <indexed image id>} or {"url": <image URL>} (with "k": 10, '
                                    '"filter": "..."), or a multipart upload')
            k = _int(body.get("k", 10), "k")
            filter_ = body.get("filter")
            if filter_ is not None and not isinstance(filter_, str):
                raise ApiError(400, "filter must be a string")
            min_score = _score(body.get("min_score"))
            photo = _photo(body)
            if "url" in body:
                if not isinstance(body["url"], str) or not body["url"].strip():
                    raise ApiError(400, "url must be a non-empty string")
                check_k(k)
                data = await run_in_threadpool(service.fetch, body["url"].strip())
                image = await run_in_threadpool(service.decode, data)
                results = await run_in_threadpool(service.search, image, k=k, filter=filter_, photo=photo,
                                                  min_score=min_score)
            else:
                results = await run_in_threadpool(
                    service.search, None, id=_int(body["id"], "id"), k=k, filter=filter_, photo=photo, min_score=min_score
                )
        else:
            raise ApiError(415, "send multipart/form-data with an 'image' file, or JSON with an 'id' or a 'url'")
        return {"results": results, "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    upload_body = {"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary"}},
        "additionalProperties": {"type": "string", "description": "metadata fields, typed like CSV cells"},
    }}}}}

    @app.post("/images", status_code=201, openapi_extra={**upload_body, **access(WRITE)}, summary="Add an uploaded image to the collection")
    async def add_image(request: Request):
        kind = request.headers.get("content-type", "").lower()
        if not kind.startswith("multipart/form-data"):
            raise ApiError(415, "send multipart/form-data with an 'image' file and metadata fields")
        form = await request.form(max_files=1, max_fields=64)
        data = await _read_upload(form.get("image"))
        fields = parse_fields(form.multi_items())
        row, created = await run_in_threadpool(service.add, data, fields)
        return JSONResponse(row, status_code=201 if created else 200)

    @app.get("/images/{image_id}", openapi_extra=access(READ), summary="The file of an indexed image")
    def get_image(image_id: str):
        path, media = service.file_of(_id(image_id))
        if is_http(path):  # indexed from a URL: the image is there (the page loads it from there too)
            return RedirectResponse(path, status_code=307)
        return FileResponse(path, media_type=media)

    @app.delete("/images/{image_id}", openapi_extra=access(WRITE), summary="Remove an image from the collection")
    def delete_image(image_id: str):
        return service.remove(_id(image_id))

    @app.get("/thumbnails/{image_id}", openapi_extra=access(READ),
             summary="A JPEG thumbnail of an indexed image (cached)")
    def get_thumbnail(image_id: str):
        path = service.thumbnail_of(_id(image_id))
        if is_http(path):
            return RedirectResponse(path, status_code=307)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/rows/{image_id}", openapi_extra=access(READ), summary="The stored fields of an indexed image")
    def get_row(image_id: str):
        return service.describe(service.row(_id(image_id), ["*"]))

    @app.head("/healthz", include_in_schema=False, openapi_extra=access(OPEN))  # for probes that send HEAD
    @app.get("/healthz", openapi_extra=access(OPEN), summary="Liveness: the store answers (never needs a key)")
    def healthz():
        problem = service.health()
        if problem is not None:
            return JSONResponse({"status": "unavailable", "detail": problem}, status_code=503)
        return {"status": "ok"}

    @app.get("/stats", openapi_extra=access(READ), summary="Count, model, dimension, uptime")
    def stats():
        with service.lock:
            return service.stats()

    @app.get("/metrics", openapi_extra=access(READ), response_class=Response,
             summary="Prometheus metrics (text exposition format)")
    def metrics():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/favicon.ico", include_in_schema=False, openapi_extra=access(OPEN))
    def favicon():
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False, openapi_extra=access(OPEN))
    def index_page():
        return HTMLResponse(page())

    return app


def serve(
    service: Service, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", max_connections: int = 256,
    *, keys: Keys | None = None, cors_origins: Sequence[str] = (), log_json: bool = False,
    shutdown_timeout: float = 30.0,
) -> int | None:
    """Run the service with uvicorn until SIGTERM / SIGINT (see ``serving.run``), then close it: wait for
    operations still under way, flush the store and close it. Returns the signal that stopped it.

    Idle keep-alive connections close after 5 s, request heads and body chunks must arrive within
    ``service.read_timeout``, and connections beyond ``max_connections`` get 503 at once."""
    from .serving.run import run

    logs.configure(log_level, log_json)
    app = create_app(service, keys=keys, cors_origins=cors_origins)
    try:
        return run(app, host=host, port=port, log_level=log_level, max_connections=max_connections,
                   read_timeout=service.read_timeout, shutdown_timeout=shutdown_timeout)
    finally:
        service.close(timeout=shutdown_timeout)
