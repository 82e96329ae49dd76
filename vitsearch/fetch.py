"""Image bytes from URLs and object stores: concurrent, bounded, retried, size-limited.

``http://`` and ``https://`` go through httpx; every other URI (``s3://``, ``gs://``, ``az://``, any
fsspec protocol) through fsspec and the protocol's own package (s3fs, gcsfs, adlfs: the ``vitsearch[s3]``,
``[gcs]`` and ``[azure]`` extras), which read credentials from their SDK's usual environment and config.

Why httpx: one client that is safe to share between threads, with a pooled keep-alive connection per
host, separate connect/read/write/pool timeouts, a streamed body (so a size limit holds while the
bytes arrive, not after), and request ``extensions`` that let a guarded fetch connect to the address it
checked while TLS still verifies the host name. It is a pure-Python wheel already used by the tests
(FastAPI's test client), and its sync API keeps the fetch threads plain; aiohttp would need an event
loop beside the model, and urllib3's own retries do not honour ``Retry-After`` for every status.

Nothing is written to disk unless a cache folder is given (:class:`DiskCache`).
"""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import UsageError, VitsearchError

if TYPE_CHECKING:
    from typing_extensions import Self

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the default of `serve --max-upload-mb` too
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


class FetchError(VitsearchError):
    """An image could not be fetched; the message is the reason shown in the summary's ``failed`` list."""

    def __init__(self, reason: str, *, retryable: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after


class TooLargeError(FetchError):
    """The image is larger than the size limit."""


def scheme_of(key: str) -> str | None:
    """The URI scheme of ``key`` in lower case (``"https"``, ``"s3"``), or None for a plain path."""
    match = _SCHEME.match(key)
    return match.group(1).lower() if match else None


def local_path(key: str) -> str:
    """A ``file://`` URI as the local path it names (``file:///photos/a%20b.jpg`` is
    ``/photos/a b.jpg``; ``file://photos/a.jpg``, a host-less slip, is ``photos/a.jpg``); any other
    key as it is."""
    if scheme_of(key) != "file":
        return key
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    parts = urlsplit(key)
    path = parts.path if parts.netloc.lower() in ("", "localhost") else parts.netloc + parts.path
    return url2pathname(path)


def is_remote(key: str) -> bool:
    """True for keys that are fetched (URLs and object-store URIs), False for local paths and ``file://``."""
    return scheme_of(key) not in (None, "file")


def is_http(key: str) -> bool:
    return scheme_of(key) in ("http", "https")


@dataclass
class FetchOptions:
    """How images are fetched. ``max_bytes`` is also the largest query image the server takes by URL."""

    concurrency: int = 32  # requests under way at once, over all hosts
    per_host: int = 8  # ... and to any one host (an object store's bucket counts as a host)
    timeout: float = 30.0  # seconds for one request: connect, headers and the whole body
    retries: int = 3  # more tries after a timeout, a dropped connection, 408/425/429 or 5xx
    backoff: float = 0.5  # first wait between tries, doubling (with jitter) up to max_wait
    max_wait: float = 60.0  # a longer Retry-After fails the image instead of stalling the run
    max_bytes: int = MAX_IMAGE_BYTES
    buffer_bytes: int = 64 << 20  # fetched bytes waiting for the model before new requests wait
    cache_dir: str | None = None
    allow_private: bool = True  # False: refuse loopback, private, link-local... addresses (the server)

    def __post_init__(self):
        for name in ("concurrency", "per_host"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.retries < 0 or self.timeout <= 0 or self.max_bytes < 1:
            raise UsageError("retries must be >= 0, and timeout and max_bytes positive")


@dataclass
class Fetched:
    """The bytes of one image and the validators that tell a later run whether it changed."""

    key: str
    data: bytes = field(repr=False)
    sha256: str
    etag: str | None = None
    mtime: float | None = None  # Last-Modified, as a Unix time
    content_type: str | None = None
    from_cache: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def hint(self) -> str:
        """What to add to "not an image" reasons: what the server said it sent, when not an image."""
        kind = (self.content_type or "").split(";")[0].strip()
        return f" (the server sent {kind})" if kind and not kind.startswith("image/") else ""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def http_time(value: str | None) -> float | None:
    """A ``Last-Modified`` header as a Unix time (None when absent or unreadable)."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def object_token(info: dict) -> tuple[int | None, float | None, str | None]:
    """(size, mtime, etag) from an fsspec ``info()`` or listing entry, whatever the store calls them."""
    size = info.get("size")
    etag = None
    for name in ("ETag", "etag", "md5Hash", "content_md5"):
        if info.get(name):
            etag = str(info[name])
            break
    mtime = None
    for name in ("LastModified", "last_modified", "updated", "mtime", "modified", "created"):
        value = info.get(name)
        if value is None or value == "":
            continue
        if isinstance(value, datetime):
            mtime = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
        elif isinstance(value, (int, float)):
            mtime = float(value)
        else:
            try:
                parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                continue
            mtime = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
        break
    return (int(size) if isinstance(size, (int, float)) else None), mtime, etag


# -- address guard --------------------------------------------------------------------------------
def address_kind(address: str) -> str | None:
    """Why ``address`` may not be fetched from on a client's behalf (e.g. "loopback"), or None if it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a literal address resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


# -- the on-disk cache ----------------------------------------------------------------------------
class DiskCache:
    """Fetched images kept on disk: bytes by content hash, and per key the validators they came with,
    so that a later fetch asks the server "changed since?" and reads the bytes from here on 304."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = os.path.abspath(os.fspath(folder))

    def _record_path(self, key: str) -> str:
        name = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
        return os.path.join(self.folder, "keys", name[:2], name + ".json")

    def _data_path(self, sha: str) -> str:
        return os.path.join(self.folder, "objects", sha[:2], sha)

    def get(self, key: str) -> tuple[dict, bytes] | None:
        try:
            with open(self._record_path(key), encoding="utf-8") as fh:
                record = json.load(fh)
            if record.get("key") != key:
                return None
            with open(self._data_path(record["sha256"]), "rb") as fh:
                data = fh.read()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            return None  # a damaged file: fetch again
        return record, data

    def put(self, fetched: Fetched) -> None:
        record = {"key": fetched.key, "sha256": fetched.sha256, "etag": fetched.etag, "mtime": fetched.mtime}
        try:
            data_path = self._data_path(fetched.sha256)
            if not os.path.isfile(data_path):
                _write_atomic(data_path, fetched.data)
            _write_atomic(self._record_path(fetched.key), json.dumps(record).encode("utf-8"))
        except OSError as exc:
            raise VitsearchError(f"cannot write to the cache {self.folder}: {exc.strerror or exc}") from None


def _write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


# -- the fetcher ----------------------------------------------------------------------------------
class Fetcher:
    """Fetches images by URL or URI with the limits of ``options``; one instance is shared by threads.

    ``client`` (an ``httpx.Client``), ``resolver`` and ``sleep`` are passed in by tests; by default a
    client is made on first use. :meth:`open` fetches one image; :meth:`stream` many, concurrently.
    """

    def __init__(
        self,
        options: FetchOptions | None = None,
        *,
        client=None,
        resolver: Resolver = resolve,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.options = options or FetchOptions()
        self.cache = DiskCache(self.options.cache_dir) if self.options.cache_dir else None
        self._client = client
        self._own_client = client is None
        self._resolver = resolver
        self._sleep = sleep
        self._lock = threading.Lock()
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._filesystems: dict[tuple[str, str], Any] = {}
        self.requests = 0  # requests sent, retries included (for tests and benchmarks)
        self.downloads = 0  # bodies received (200s; not 304s, not failures)

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def client(self):
        with self._lock:
            if self._client is None:
                import httpx

                limits = httpx.Limits(max_connections=self.options.concurrency,
                                      max_keepalive_connections=self.options.concurrency)
                self._client = httpx.Client(timeout=httpx.Timeout(self.options.timeout), limits=limits,
                                            headers={"User-Agent": f"vitsearch/{__version__}"},
                                            follow_redirects=False)
            return self._client

    def close(self) -> None:
        if self._client is not None and self._own_client:
            self._client.close()
        self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _host_slot(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            if host not in self._hosts:
                self._hosts[host] = threading.BoundedSemaphore(self.options.per_host)
            return self._hosts[host]

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    # -- one image ----------------------------------------------------------------------------
    def open(self, key: str, *, etag: str | None = None, mtime: float | None = None) -> Fetched | None:
        """The bytes of ``key``; None when ``etag`` / ``mtime`` (the stored validators) say it has not
        changed. Raises :class:`FetchError` with the reason after the retries."""
        cached = None
        if self.cache is not None and etag is None and mtime is None:
            cached = self.cache.get(key)
            if cached is not None:
                etag, mtime = cached[0].get("etag"), cached[0].get("mtime")
        fetched = self._with_retries(key, etag, mtime)
        if fetched is None and cached is not None:
            record, data = cached
            return Fetched(key, data, record["sha256"], record.get("etag"), record.get("mtime"), from_cache=True)
        if fetched is not None and self.cache is not None:
            self.cache.put(fetched)
        return fetched

    def _with_retries(self, key: str, etag: str | None, mtime: float | None) -> Fetched | None:
        scheme = scheme_of(key)
        if scheme is None or scheme == "file":
            raise FetchError("bad URL: not a URL or an object-store URI")
        if not self.options.allow_private and scheme not in ("http", "https"):
            raise FetchError(f"bad URL: only http and https URLs are accepted, not {scheme}://")
        host = self._host_key(key, scheme)
        delay = self.options.backoff
        for attempt in range(self.options.retries + 1):
            try:
                with self._host_slot(host):
                    self._count("requests")
                    if scheme in ("http", "https"):
                        return self._http(key, etag, mtime)
                    return self._object(key, etag, mtime)
            except FetchError as exc:
                if not exc.retryable or attempt == self.options.retries:
                    raise
                wait_for = exc.retry_after if exc.retry_after is not None else delay * random.uniform(0.5, 1.0)
                if wait_for > self.options.max_wait:
                    raise FetchError(f"{exc} (Retry-After {wait_for:.0f} s is longer than the "
                                     f"{self.options.max_wait:.0f} s vitsearch waits)") from None
                self._sleep(wait_for)  # outside the host slot: other images of the host go on
                delay = min(delay * 2, self.options.max_wait)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _host_key(key: str, scheme: str) -> str:
        rest = key[len(scheme) + 3 :]
        return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1].lower()}"

    # -- HTTP ---------------------------------------------------------------------------------
    def _http(self, url: str, etag: str | None, mtime: float | None) -> Fetched | None:
        import httpx

        headers = {"Accept": "image/*,*/*;q=0.5"}
        if etag:
            headers["If-None-Match"] = etag
        if mtime:
            headers["If-Modified-Since"] = email.utils.formatdate(mtime, usegmt=True)
        deadline = time.monotonic() + self.options.timeout
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            request = self._request(target, headers)
            try:
                response = self.client.send(request, stream=True)
            except httpx.TimeoutException:
                raise FetchError(f"timed out after {self.options.timeout:g} s", retryable=True) from None
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise FetchError(f"bad URL: {exc}") from None
            except httpx.TransportError as exc:
                raise FetchError(f"cannot connect: {exc or type(exc).__name__}", retryable=True) from None
            try:
                if response.status_code in _REDIRECTS and response.headers.get("Location"):
                    target = str(httpx.URL(target).join(response.headers["Location"]))
                    continue
                return self._body(url, response, deadline, conditional=bool(etag or mtime))
            finally:
                response.close()
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    def _request(self, url: str, headers: dict):
        """The request for ``url``; guarded (``allow_private=False``), pinned to the public address
        that was checked, so that a second DNS answer cannot point the connection elsewhere."""
        import httpx

        if any(c.isspace() for c in url):
            raise FetchError("bad URL: it contains spaces")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise FetchError(f"bad URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise FetchError(f"bad URL: only http and https redirects are followed, not {parsed.scheme}://")
        if not parsed.host:
            raise FetchError("bad URL: no host name")
        extensions: dict = {}
        if not self.options.allow_private:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                addresses = self._resolver(parsed.host, port)
            except (OSError, UnicodeError) as exc:
                raise FetchError(f"cannot resolve {parsed.host}: {getattr(exc, 'strerror', None) or exc}") from None
            if not addresses:
                raise FetchError(f"cannot resolve {parsed.host}")
            for address in addresses:
                kind = address_kind(address)
                if kind:
                    raise FetchError(f"refused: {parsed.host} is a {kind} address ({address}); the server "
                                     "fetches public URLs only (see --allow-private-urls)")
            headers = {**headers, "Host": parsed.netloc.decode("ascii")}
            if parsed.scheme == "https":
                extensions["sni_hostname"] = parsed.host
            parsed = parsed.copy_with(host=addresses[0])
        return self.client.build_request("GET", parsed, headers=headers, extensions=extensions)

    def _body(self, url: str, response, deadline: float, conditional: bool) -> Fetched | None:
        import httpx

        status = response.status_code
        if status == 304 and conditional:
            return None
        if status in RETRY_STATUSES:
            raise FetchError(f"HTTP {status} {response.reason_phrase}".rstrip(), retryable=True,
                             retry_after=parse_retry_after(response.headers.get("Retry-After")))
        if status != 200:
            raise FetchError(f"HTTP {status} {response.reason_phrase}".rstrip())
        limit = self.options.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLargeError(f"larger than the limit of {_mb(limit)} ({int(declared):,} bytes)")
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise TooLargeError(f"larger than the limit of {_mb(limit)}")
                if time.monotonic() > deadline:
                    raise FetchError(f"timed out after {self.options.timeout:g} s", retryable=True)
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {self.options.timeout:g} s", retryable=True) from None
        except httpx.TransportError as exc:
            raise FetchError(f"connection lost: {exc or type(exc).__name__}", retryable=True) from None
        self._count("downloads")
        data = bytes(body)
        return Fetched(url, data, hashlib.sha256(data).hexdigest(), etag=response.headers.get("ETag"),
                       mtime=http_time(response.headers.get("Last-Modified")),
                       content_type=response.headers.get("Content-Type"))

    # -- object stores (fsspec) ---------------------------------------------------------------
    def filesystem(self, uri: str):
        """The fsspec filesystem of ``uri`` (one per protocol, shared) and the path inside it."""
        protocol = scheme_of(uri) or "file"
        options = url_options(protocol, uri)
        key = (protocol, repr(sorted(options.items())))
        with self._lock:
            fs = self._filesystems.get(key)
        if fs is None:
            fs = open_filesystem(protocol, **options)
            with self._lock:
                self._filesystems.setdefault(key, fs)
        return fs, fs._strip_protocol(uri)

    def _object(self, uri: str, etag: str | None, mtime: float | None) -> Fetched | None:
        fs, path = self.filesystem(uri)
        limit = self.options.max_bytes
        try:
            info = fs.info(path)
            size, new_mtime, new_etag = object_token(info)
            if info.get("type") == "directory":
                raise FetchError("is a folder, not an object")
            if (etag or mtime) and ((etag and new_etag == etag) or (not etag and mtime and new_mtime == mtime)):
                return None
            if size is not None and size > limit:
                raise TooLargeError(f"larger than the limit of {_mb(limit)} ({size:,} bytes)")
            data = fs.cat_file(path, start=0, end=limit + 1) if size is None else fs.cat_file(path)
        except FetchError:
            raise
        except FileNotFoundError:
            raise FetchError("not found") from None
        except PermissionError as exc:
            raise FetchError(f"permission denied: {exc}") from None
        except TimeoutError:
            raise FetchError(f"timed out after {self.options.timeout:g} s", retryable=True) from None
        except Exception as exc:  # noqa: BLE001 - fsspec's backends raise many types (botocore's, aiohttp's…)
            raise FetchError(fs_reason(exc, "cannot read"), retryable=isinstance(exc, ConnectionError)) from None
        if len(data) > limit:
            raise TooLargeError(f"larger than the limit of {_mb(limit)}")
        self._count("downloads")
        return Fetched(uri, data, hashlib.sha256(data).hexdigest(), etag=new_etag, mtime=new_mtime)

    # -- many images --------------------------------------------------------------------------
    def stream(
        self,
        jobs: Iterable[tuple[Any, str, str | None, float | None]],
        prepare: Callable[[Fetched], Any] | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """Fetch ``(item, key, etag, mtime)`` jobs on ``concurrency`` threads; yield ``(item, outcome)``
        as each finishes (not in order). ``outcome`` is what ``prepare(fetched)`` returned (run on the
        fetch thread, e.g. to decode: then the consumer's thread only embeds), the :class:`Fetched`
        itself without ``prepare``, None when the validators say unchanged, or the exception.

        The threads run ahead of the consumer, but a request waits to start while the images fetched
        and not yet taken by the consumer hold ``buffer_bytes`` or more; so what is held is at most
        about ``buffer_bytes`` plus the downloads under way (each under ``max_bytes``).
        """
        opts = self.options
        todo = iter(jobs)
        pending: dict = {}
        budget = threading.Condition()
        state = {"held": 0, "closing": False}

        def run(key, etag, mtime):
            """(outcome, bytes it holds until consumed)"""
            with budget:
                while state["held"] >= opts.buffer_bytes and not state["closing"]:
                    budget.wait()
            if state["closing"]:
                return None, 0
            outcome, size = self._one(key, etag, mtime, prepare)
            with budget:
                state["held"] += size
            return outcome, size

        pool = ThreadPoolExecutor(opts.concurrency, thread_name_prefix="vitsearch-fetch")
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < 4 * opts.concurrency:  # a queue, so no thread idles
                    job = next(todo, None)
                    if job is None:
                        exhausted = True
                        break
                    item, key, etag, mtime = job
                    pending[pool.submit(run, key, etag, mtime)] = item
                if not pending:
                    return
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    outcome, size = future.result()
                    with budget:
                        state["held"] -= size
                        budget.notify_all()
                    yield pending.pop(future), outcome
        finally:  # also when the consumer stops early: queued jobs are dropped, running ones end alone
            with budget:
                state["closing"] = True
                budget.notify_all()
            pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, key: str, etag, mtime, prepare) -> tuple[Any, int]:
        """One job of :meth:`stream`: (outcome, bytes fetched); never raises."""
        try:
            fetched = self.open(key, etag=etag, mtime=mtime)
        except VitsearchError as exc:
            return exc, 0
        except Exception as exc:  # noqa: BLE001 - one image never ends the run
            return FetchError(f"cannot fetch: {exc or type(exc).__name__}"), 0
        if fetched is None or prepare is None:
            return fetched, 0 if fetched is None else fetched.size
        try:
            return prepare(fetched), fetched.size
        except VitsearchError as exc:
            return exc, fetched.size
        except Exception as exc:  # noqa: BLE001
            return FetchError(f"cannot decode: {exc or type(exc).__name__}"), fetched.size


def url_options(protocol: str, uri: str) -> dict:
    """What a filesystem of ``protocol`` takes from the URI itself (an ftp or sftp host, an Azure account):
    fsspec's own parsing; {} where there is none, or where fsspec or the protocol is unknown (then
    :func:`open_filesystem` says why)."""
    try:
        import fsspec

        return dict(fsspec.get_filesystem_class(protocol)._get_kwargs_from_urls(uri) or {})
    except Exception:  # noqa: BLE001 - any failure here is reported by open_filesystem
        return {}


def open_filesystem(protocol: str, **options):
    """``fsspec.filesystem(protocol, **options)``, with the package to install named when it is missing;
    any other failure to make it (an ftp host that does not answer) is a :class:`FetchError` saying why."""
    try:
        import fsspec
    except ImportError:
        raise VitsearchError(f"{protocol}:// URIs need fsspec: pip install 'vitsearch[s3]' (or [gcs], [azure])") \
            from None
    extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError as exc:
        hint = f"pip install 'vitsearch[{extra[protocol]}]'" if protocol in extra else str(exc)
        raise VitsearchError(f"{protocol}:// URIs need another package: {hint}") from None
    except ValueError as exc:
        raise VitsearchError(f"{protocol}:// is not a protocol fsspec knows ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a backend's constructor may connect, and raise anything
        raise FetchError(fs_reason(exc, f"cannot open {protocol}://")) from None


# Errors whose own text does not say what to do, by class name (their packages are optional).
_FS_HINTS = {
    "NoCredentialsError": "no credentials for s3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                          "with ~/.aws/credentials",
    "PartialCredentialsError": "incomplete credentials for s3: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
}


def fs_reason(exc: BaseException, doing: str = "") -> str:
    """One line for an error an fsspec filesystem raised while ``doing`` something: a hint for the common
    ones (no credentials), else what was being done and the error's own words (its type when it has none)."""
    for err in (exc, exc.__cause__, exc.__context__):
        if err is not None and type(err).__name__ in _FS_HINTS:
            return _FS_HINTS[type(err).__name__]
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, PermissionError):
        return f"permission denied: {' '.join(str(exc).split())}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{doing}: {text}" if doing else text


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB"
