"""Milvus: the collection schema, its model record, and the few operations vitsearch needs.

A filesystem path opens Milvus Lite (embedded, one process per file); ``http(s)://`` or ``tcp://``
URIs open a Milvus server. Differences between the two are handled here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import FilterError, StoreError, StoreLockedError, check_count
from .exif import CAMERA_WORDS, camera_words
from .exif import FIELDS as EXIF_TYPES

SCHEMA_VERSION = 1
META_KEY = "vitsearch.meta"

# -- the stored row ---------------------------------------------------------------------------------
# The schema's fields (besides the vector), in order: a file's facts.
ROW_FIELDS = ["id", "path", "size", "mtime", "sha256", "width", "height"]
# Dynamic fields read from the file's EXIF (see vitsearch.exif), present when the file has them.
EXIF_FIELDS = list(EXIF_TYPES)
# Which of a row's dynamic fields came from its file's EXIF; the others are the user's metadata. A row
# without it was written before vitsearch read EXIF.
EXIF_SOURCE = "exif_fields"
# Where a row came from (see vitsearch.sources): the change token of a remote image (its ETag) and the
# feed file that lists it; vitsearch writes them, present when the source gives them.
SOURCE_FIELDS = ["etag", "feed"]
# Which of a row's fields are its feed's columns (rows from a feed; those written before vitsearch
# recorded it lack it), so that a column the feed drops is cleared from the rows it gave it to.
FEED_SOURCE = "feed_fields"
# Names a user's metadata cannot take. The EXIF names are not among them: a user's value wins.
RESERVED = frozenset(ROW_FIELDS + SOURCE_FIELDS + ["vector", EXIF_SOURCE, FEED_SOURCE, CAMERA_WORDS, "score", "rank"])
# Bookkeeping that hits and API answers leave out (and fields whose value is null: see make_row).
HIDDEN_FIELDS = frozenset({EXIF_SOURCE, FEED_SOURCE, CAMERA_WORDS})
MAX_K = 16384
_BATCH = 1000
_HNSW = {"M": 16, "efConstruction": 200}
# HNSW's search breadth: near-exact recall@10 for little more time per query than ef=64
# (benchmarks/bench_store.py; docs/performance.md, "The store")
SEARCH_EF = 256

# gRPC's C core writes its own lines to stderr: one each time a DataLoader worker forks beside an
# open client, and an "E ... GOAWAY ... too_many_pings" when a quiet run (a long hash) outlasts
# Milvus Lite's ping allowance (pymilvus pings every 10 s; the channel is simply re-opened). Neither
# is the user's concern, and every failure that matters reaches vitsearch as an exception it reports,
# so the core's log stays off unless GRPC_VERBOSITY says otherwise.
# The pings are left as pymilvus sets them (keepalive 10 s, also on idle channels; `grpc_options`
# could change them): a Milvus server accepts a ping every 5 s (its proxy's keepalive policy), so
# only Milvus Lite answers them with GOAWAY: its gRPC server (in-process, or `milvus-lite server`)
# keeps gRPC's default of one ping per 5 minutes. The client then pings less often and reconnects on
# its next call (a server store also retries a call that fails for a transient reason: `_retrying`).
# Pinging less often would cost a server's clients their quick notice of a dead connection, so the
# log line is silenced instead of the pings.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")


# True in processes that vitsearch owns (the CLI sets it): no code there hands pymilvus a scipy sparse
# matrix, so pymilvus need not import scipy.sparse to ask (see _skip_sparse_probe).
DENSE_ONLY = False


def _skip_sparse_probe() -> None:
    """pymilvus imports scipy.sparse on a process's first insert or search (a noticeable part of a
    query's start-up, docs/core.md) only to ask whether the data is a sparse matrix: record "no
    sparse matrices here" as pymilvus itself does when scipy is absent."""
    if "scipy.sparse" in sys.modules:
        return
    try:
        from pymilvus.client.utils import SciPyHelper
    except ImportError:  # another pymilvus: it probes as it likes
        return
    if hasattr(SciPyHelper, "_checked"):
        SciPyHelper._checked = True


# Open Stores per Milvus Lite path in this process: the last one to close releases the store.
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


def path_id(path: str) -> int:
    """The primary key of a file: a stable 63-bit hash of its absolute path."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def make_row(
    path: str,
    size: int,
    mtime: float,
    sha256: str,
    width: int,
    height: int,
    vector,
    *,
    exif: dict | None = None,
    user: dict | None = None,
    source: dict | None = None,
    previous: dict | None = None,
    feed_fields: Iterable[str] | None = None,
) -> dict:
    """A row as it is stored: the file's facts and vector, the EXIF fields its file gave (``exif``, see
    :func:`vitsearch.exif.read_exif`) and the user's metadata (``user``), whose value wins where both
    name a field. ``exif_fields`` records which fields came from the file. ``source`` holds the
    :data:`SOURCE_FIELDS` the image's source gave (its ETag, the feed that lists it).

    ``feed_fields``, for an image listed by a feed: the feed's columns (some may be in ``user``).

    ``previous`` is the stored row this one replaces: its EXIF and source fields that the image no
    longer has, and the feed columns that its feed no longer has, are written as null, since Milvus Lite merges an
    upsert's dynamic fields into the stored ones (a server replaces the row; null is "no value" to both, and to
    filters)."""
    user = dict(user or {})
    from_file = {k: v for k, v in (exif or {}).items() if k not in user and k != CAMERA_WORDS and v is not None}
    row = {**user, **from_file}
    if CAMERA_WORDS not in user:
        words = camera_words(row.get("camera_make"), row.get("camera_model"))
        if words:
            row[CAMERA_WORDS] = from_file[CAMERA_WORDS] = words
    row.update(
        id=path_id(path), path=path, size=int(size), mtime=float(mtime), sha256=sha256, width=int(width),
        height=int(height), vector=[float(v) for v in vector],
    )
    row.update({k: v for k, v in (source or {}).items() if k in SOURCE_FIELDS and v})
    row[EXIF_SOURCE] = sorted(from_file)
    for name in (previous or {}).get(EXIF_SOURCE) or ():
        row.setdefault(name, None)
    for name in SOURCE_FIELDS:
        if (previous or {}).get(name):
            row.setdefault(name, None)
    if feed_fields is not None:
        row[FEED_SOURCE] = sorted(feed_fields)
        for name in set((previous or {}).get(FEED_SOURCE) or ()) - set(feed_fields):
            row.setdefault(name, None)
    return row


def fields_to_keep(row: dict, from_feed: bool) -> dict:
    """The user's metadata of a stored row that a rewrite of it keeps: all of it, but for an image now
    listed by a feed, what its feed gave it last time (the feed's row gives its columns anew)."""
    fields = user_fields(row)
    if from_feed:
        for name in row.get(FEED_SOURCE) or ():
            fields.pop(name, None)
    return fields


def user_fields(row: dict) -> dict:
    """The user's metadata of a stored row: every field but vitsearch's own and those from EXIF."""
    from_file = set(row.get(EXIF_SOURCE) or ())
    return {k: v for k, v in row.items()
            if k not in RESERVED and k not in from_file and v is not None and not k.startswith("$")}


def exif_of(row: dict) -> dict | None:
    """The fields a stored row has from its file's EXIF; None for a row written before EXIF was read."""
    if EXIF_SOURCE not in row:
        return None
    return {k: row[k] for k in row[EXIF_SOURCE] if row.get(k) is not None}


def has_field(name: str) -> str:
    """A filter true for the rows that have a usable value of the EXIF field ``name``."""
    if EXIF_TYPES.get(name) is str:
        return f'{name} >= ""'
    return f"({name} >= 0 or {name} < 0)"


# The escapes that Milvus Lite's expression parser and a Milvus server's (its grammar, then Go's
# strconv.Unquote) both accept; a raw newline or CR ends a literal for both. Other control characters
# may stand as they are.
_LITERAL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be stored: False for a file name with bytes that are not UTF-8 (Python keeps
    them as lone surrogates, which Milvus refuses)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def quote(value: str) -> str:
    """A string literal for a Milvus boolean expression, for any text (a path with a newline too)."""
    return '"' + value.translate(_LITERAL_ESCAPES) + '"'


def collection_schema(dim: int, description: str = ""):
    """vitsearch's collection schema: fixed file fields, the vector, and dynamic fields for metadata."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True, description=description)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("path", DataType.VARCHAR, max_length=65535)
    schema.add_field("size", DataType.INT64)
    schema.add_field("mtime", DataType.DOUBLE)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("width", DataType.INT64)
    schema.add_field("height", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def is_server_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://"))


def _lite_path(uri: str) -> str:
    path = os.path.abspath(os.path.expanduser(uri))
    if os.path.isdir(path) and not path.endswith(".db"):  # Milvus Lite 3 keeps its data in a .db folder
        path = os.path.join(path, "vitsearch.db")
    if not path.endswith(".db"):
        raise StoreError(f"a Milvus Lite store is a file ending in .db (or a folder to hold one), not {uri!r}")
    return path


def _lite_is_locked(path: str) -> bool:
    """True if another process holds Milvus Lite's lock on the store at ``path``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        from milvus_lite.db import LOCK_FILENAME
    except ImportError:
        LOCK_FILENAME = "LOCK"
    lock = os.path.join(path, LOCK_FILENAME)
    if not os.path.exists(lock):
        return False
    try:
        fh = open(lock, "a+b")  # noqa: SIM115 - closed below; Milvus Lite opens it so too
    except OSError as exc:
        raise _unwritable(path, path, exc) from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _unwritable(path: str, where: str, exc: OSError | None = None) -> StoreError:
    """The error for a Milvus Lite store whose folder ``where`` cannot be written: Milvus Lite writes to
    its store (its lock, its staging folder) even to read it, so a read-only one cannot be opened."""
    if exc is not None and exc.errno:
        reason = os.strerror(exc.errno).lower()
    else:
        reason = "read-only file system" if _on_read_only_fs(where) else "permission denied"
    if os.path.exists(path):
        return StoreError(
            f"cannot open the Milvus Lite store {path}: it is not writable ({reason}), and Milvus Lite writes "
            "to its store even to read it; copy it to a writable folder"
        )
    return StoreError(f"cannot create the Milvus Lite store {path}: the folder {where} is not writable ({reason})")


def _on_read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False


def _check_lite_writable(path: str) -> None:
    """Raise a :class:`StoreError` if the Milvus Lite store at ``path``, or the nearest folder that would
    hold it when it does not exist yet, is not writable (a read-only file system, a folder's mode)."""
    where = path
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    if not os.access(where, os.W_OK):
        raise _unwritable(path, where)


def _lite_open_here(path: str) -> bool:
    """True if this process already has the Milvus Lite store at ``path`` open (then it is shared)."""
    with _LITE_LOCK:
        if path in _LITE_USERS:
            return True
    try:
        from milvus_lite.server_manager import server_manager_instance

        return path in getattr(server_manager_instance, "_servers", {})  # opened by a bare MilvusClient
    except Exception:  # noqa: BLE001
        return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _root_cause(exc: BaseException) -> BaseException:
    *_, innermost = _chain(exc)
    return innermost


def _message(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):  # a gRPC error: its details, not its multi-line repr
        try:
            return " ".join(str(details()).split())
        except Exception:  # noqa: BLE001, S110 - no details: the message below
            pass
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())


_TRANSIENT_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
_TRANSIENT_WORDS = ("server unavailable", "fail connecting to server", "connection refused", "connection reset",
                    "socket closed", "failed to connect to all addresses",
                    # a Milvus server stopping or starting: its proxy answers, its coordinators do not yet
                    "find no available rootcoord", "find no available querycoord", "find no available datacoord")


def _shortened(message: str, limit: int = 400) -> str:
    """A message that may quote a client's input (a filter: Milvus's parser quotes it too) cut to ``limit``
    characters: an answer, not an echo of any size."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


def is_transient(exc: BaseException, echo: str | None = None) -> bool:
    """True for errors that mean "the server is not answering now" (worth retrying), not "the request is bad".

    ``echo`` is user text the server may quote back in an error (a filter expression): its words are taken out
    of the message before looking for outage phrases, so a filter that says "server unavailable" stays a
    filter error.
    """
    for err in _chain(exc):
        code = getattr(err, "code", None)
        if callable(code):  # grpc.RpcError
            try:
                code = code()
            except Exception:  # noqa: BLE001
                code = None
        if getattr(code, "name", None) in _TRANSIENT_CODES:
            return True
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        message = str(err).lower()
        for part in sorted((echo or "").lower().split(), key=len, reverse=True):
            message = message.replace(part, " ")
        if any(word in message for word in _TRANSIENT_WORDS):
            return True
    return False


def retry_seconds() -> float:
    """How long a server store keeps retrying a call that failed for a transient reason."""
    raw = os.environ.get("VITSEARCH_RETRY_SECONDS", "")
    try:
        return max(0.0, float(raw)) if raw else 60.0
    except ValueError:
        raise StoreError(f"VITSEARCH_RETRY_SECONDS must be a number of seconds, not {raw!r}") from None


class Store:
    """One collection of image rows in Milvus Lite or a Milvus server."""

    def __init__(
        self,
        uri: str,
        collection: str = "images",
        *,
        token: str | None = None,
        timeout: float = 15.0,
        retry_for: float | None = None,
    ):
        self.is_server = is_server_uri(uri)
        self.uri = uri if self.is_server else _lite_path(uri)
        self.collection = collection
        self.token = token
        self.timeout = timeout
        # A Milvus server that stops answering (restart, network) is retried with exponential back-off
        # for this long before a call fails; Milvus Lite runs in-process and is never retried.
        self.retry_for = (retry_seconds() if retry_for is None else retry_for) if self.is_server else 0.0
        self.retries = 0  # retried calls so far (for reports and tests)
        self._waited = 0.0
        self._client = None
        self._meta: dict | None = None
        self._loaded = False
        self._synced = False  # a Strong read has happened: later reads may be Session (see _level)

    # -- connection -------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self):
        from pymilvus import MilvusClient

        # pymilvus logs every failed call with a traceback; vitsearch raises and reports them itself.
        if DENSE_ONLY:
            _skip_sparse_probe()
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)  # Milvus Lite's in-process server
        if not self.is_server:
            _check_lite_writable(self.uri)
            try:
                os.makedirs(os.path.dirname(self.uri), exist_ok=True)
            except OSError as exc:
                raise _unwritable(self.uri, os.path.dirname(self.uri), exc) from None
            # Checked first: once Milvus Lite has taken the lock itself, a failure to open for another
            # reason would look like "in use" from here.
            if not _lite_open_here(self.uri) and _lite_is_locked(self.uri):
                raise StoreLockedError(
                    f"the Milvus Lite store {self.uri} is in use by another process "
                    "(Milvus Lite allows one process per file; stop the other one, or use a Milvus server)"
                )
        kwargs = {"token": self.token} if self.token else {}
        try:
            try:
                client = MilvusClient(uri=self.uri, timeout=self.timeout, **kwargs)
            except Exception as exc:
                if not (self.is_server and is_transient(exc)):
                    raise
                # Once more, on a new channel: pymilvus reuses a cached gRPC channel per address, and a
                # server may have closed it (Milvus Lite's server mode sends GOAWAY "too many pings" to
                # a client idle for half a minute). A server that is really down fails again at once.
                time.sleep(0.2)
                client = MilvusClient(uri=self.uri, timeout=self.timeout, **kwargs)
            if not self.is_server:
                with _LITE_LOCK:
                    _LITE_USERS[self.uri] = _LITE_USERS.get(self.uri, 0) + 1
            return client
        except Exception as exc:  # noqa: BLE001 - pymilvus raises several types for one cause
            cause = _root_cause(exc)
            if self.is_server and is_transient(exc):
                raise StoreError(
                    f"cannot reach the Milvus server at {self.uri}: {_message(cause)} (is it running? "
                    "`docker compose up -d` starts one; see the README)"
                ) from None
            where = "Milvus server at " + self.uri if self.is_server else "Milvus Lite store " + self.uri
            raise StoreError(f"cannot open the {where}: {_message(cause)}") from None

    def close(self) -> None:
        """Close the connection; a Milvus Lite store is also let go (its file lock released) once no
        other Store of this process has it open, so that another process can open it."""
        if self._client is None:
            return
        try:
            self._client.close()
        except Exception:  # noqa: BLE001, S110 - closing: a dead connection is closed enough
            pass
        self._client = None
        self._loaded = False
        if not self.is_server:
            with _LITE_LOCK:
                users = _LITE_USERS.get(self.uri, 1) - 1
                if users > 0:
                    _LITE_USERS[self.uri] = users
                    return
                _LITE_USERS.pop(self.uri, None)
            try:  # Milvus Lite keeps an in-process server per path until exit unless told otherwise
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)
            except Exception:  # noqa: BLE001, S110 - an older Milvus Lite: released at exit instead
                pass

    def _retrying(self, fn: Callable, *args, _echo: str | None = None, **kwargs):
        """``fn(...)``, retried with back-off (0.25 s doubling to 5 s) while the server is unreachable.
        ``_echo`` is user text the server may quote in its errors (see ``is_transient``).

        Every call vitsearch makes is safe to repeat: upserts and deletes by primary key, reads, and
        an iterator's ``next`` (its cursor moves only on success).
        """
        start = time.monotonic()
        delay = 0.25
        while True:
            try:
                return fn(*args, **kwargs)
            except StoreError:
                raise
            except Exception as exc:
                self._waited = time.monotonic() - start
                if not (self.is_server and is_transient(exc, _echo)) or self._waited + delay > self.retry_for:
                    raise
                self.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return self._retrying(fn, *args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: BaseException, echo: str | None = None) -> StoreError:
        if self.is_server and is_transient(exc, echo):
            kept = "Work written so far is kept; re-run" if what in ("upsert", "delete") else "Try again"
            return StoreError(
                f"the Milvus server at {self.uri} stopped answering (retried for {self._waited:.0f} s): "
                f"Milvus {what} failed: {_message(_root_cause(exc))}. {kept} when the server is back"
            )
        return StoreError(f"Milvus {what} failed: {_message(exc)}")

    # -- collection -------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the collection exists. A Milvus Lite store that is not on disk is not opened to ask:
        opening one creates it, and reading commands must not leave stores behind."""
        if not self.is_server and self._client is None and not os.path.exists(self.uri):
            return False
        return bool(self._call("has_collection", self.client.has_collection, self.collection))

    def meta(self) -> dict | None:
        """The collection's record of its model (name, fingerprint, dim, schema), or None if absent."""
        if self._meta is None and self.exists():
            info = self._call("describe_collection", self.client.describe_collection, self.collection)
            raw = (info.get("properties") or {}).get(META_KEY) or info.get("description") or ""
            try:
                self._meta = json.loads(raw) if raw else {}
            except ValueError:
                self._meta = {}
            self._ensure_loaded()
        return self._meta

    def create(self, meta: dict) -> None:
        """Create the collection for vectors of ``meta['dim']`` dimensions, recording ``meta``."""
        meta = {**meta, "schema": SCHEMA_VERSION}
        raw = json.dumps(meta, sort_keys=True)
        schema = collection_schema(int(meta["dim"]), description=raw)
        self._call(
            "create_collection",
            self.client.create_collection,
            self.collection,
            schema=schema,
            index_params=self._index_params(),
            consistency_level="Strong",
            properties={META_KEY: raw},
        )
        self._meta = meta
        self._loaded = False

    def _index_params(self):
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="COSINE", params=dict(_HNSW))
        return index

    def sibling(self, collection: str) -> Store:
        """Another collection of the same store, opened with this one's settings."""
        return Store(self.uri, collection, token=self.token, timeout=self.timeout,
                     retry_for=self.retry_for if self.is_server else None)

    def take_over(self, other: Store) -> None:
        """Put the collection ``other`` (of the same store) in this one's place: this one is dropped and
        that one renamed to its name, then loaded. Between the two calls the name holds nothing."""
        self.drop()
        self._call("rename_collection", self.client.rename_collection, other.collection, self.collection)
        other.close()
        self._ensure_loaded()  # a renamed collection comes back released (Milvus Lite)

    def drop(self) -> None:
        if self.exists():
            self._call("drop_collection", self.client.drop_collection, self.collection)
        self._meta = None
        self._loaded = False

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        state = self._call("get_load_state", self.client.get_load_state, self.collection)
        if "Loaded" not in str(state.get("state", "")):
            if not self._call("list_indexes", self.client.list_indexes, self.collection):
                # a run killed between creating the collection and its index: finish the job
                self._call("create_index", self.client.create_index, self.collection, self._index_params())
            self._call("load_collection", self.client.load_collection, self.collection)
        self._loaded = True

    # -- rows -------------------------------------------------------------------------------
    def upsert(self, rows: list[dict]) -> None:
        for start in range(0, len(rows), _BATCH):
            self._call("upsert", self.client.upsert, self.collection, rows[start : start + _BATCH])

    def delete(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        for start in range(0, len(ids), _BATCH):
            self._call("delete", self.client.delete, self.collection, ids=ids[start : start + _BATCH])
        return len(ids)

    def flush(self) -> None:
        """Seal the rows written so far into indexed segments. Milvus Lite otherwise searches its
        unsealed rows in Python one by one, several times slower than sealed ones (benchmarks/bench_store.py);
        a server seals them in the background, and a flush after a bulk write only hurries it."""
        self._call("flush", self.client.flush, self.collection)

    def _level(self, strong: bool = False) -> dict:
        """The consistency of a read, as keyword arguments.

        On a Milvus server a Strong read waits for the server's next time tick, whatever the call
        (on Milvus 2.3.5 that is most of a search's time: docs/milvus.md). So a Store reads Strong once, which
        makes every write acknowledged before it visible (earlier runs, other processes), and Session
        after that: this client's own writes are always seen, other clients' within moments.
        Milvus Lite has one writer and answers at once.
        """
        if not self.is_server:
            return {}
        if strong or not self._synced:
            self._synced = True
            return {"consistency_level": "Strong"}
        return {"consistency_level": "Session"}

    def count(self, filter: str = "", *, strong: bool = True) -> int:
        """The number of rows, or of those that match ``filter`` (``strong``: exact at the time of the
        call; else as this Store's reads see it, see ``_level``)."""
        if not self.exists():
            return 0
        self._ensure_loaded()
        res = self._call("count", self.client.query, self.collection, filter=filter, output_fields=["count(*)"],
                         **self._level(strong=strong))
        return int(res[0]["count(*)"]) if res else 0

    def get(self, ids: list[int], fields: list[str] | None = None) -> list[dict]:
        self._ensure_loaded()
        out: list[dict] = []
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            expr = f"id in [{', '.join(str(i) for i in chunk)}]"
            out += self._call("query", self.client.query, self.collection, filter=expr,
                              output_fields=fields or ROW_FIELDS, limit=len(chunk), **self._level())
        return out

    def iter_rows(self, filter: str = "", fields: list[str] | None = None) -> Iterator[dict]:
        """Every row that matches ``filter``, in batches (memory stays bounded)."""
        self._ensure_loaded()
        if self.is_server:
            yield from self._pages(filter, fields)
        else:
            yield from self._iterate(filter, fields)

    def _iterate(self, filter: str, fields: list[str] | None) -> Iterator[dict]:
        it = self._call(
            "query_iterator",
            self.client.query_iterator,
            self.collection,
            batch_size=_BATCH,
            filter=filter or "id >= 0",
            output_fields=fields or ROW_FIELDS,
            **self._level(),
        )
        try:
            while True:
                batch = self._call("query_iterator", it.next)
                if not batch:
                    break
                yield from batch
        finally:
            it.close()

    def _pages(self, filter: str, fields: list[str] | None) -> Iterator[dict]:
        """A server's rows by primary-key pages: ``id > last`` with a limit, which Milvus answers in
        primary-key order. pymilvus's query iterator pages the same way, but on Milvus 2.3.5 it cannot
        get a snapshot timestamp and makes every page a Strong read (docs/milvus.md).
        A server whose first full page is not in key order (Milvus Lite's server mode) is read with
        the iterator instead."""
        wanted = list(fields or ROW_FIELDS)
        if "id" not in wanted and "*" not in wanted:
            wanted.append("id")
        last = None
        while True:
            cursor = f"id > {last}" if last is not None else ""
            expr = " and ".join(f"({part})" for part in (filter, cursor) if part) or "id >= 0 or id < 0"
            page = self._call("query", self.client.query, self.collection, filter=expr, output_fields=wanted,
                              limit=_BATCH, **self._level())
            ids = [row["id"] for row in page]
            if last is None and len(page) == _BATCH and ids != sorted(ids):
                yield from self._iterate(filter, fields)
                return
            yield from page
            if len(page) < _BATCH:
                return
            last = max(ids)

    def rows_under(self, root: str, fields: list[str] | None = None, sep: str = os.sep) -> Iterator[dict]:
        """Rows whose path is ``root`` itself or lies inside the folder ``root`` (``sep``: "/" for URIs).

        No rows for a ``root`` that is not valid UTF-8 (a file name's undecodable bytes, as Python keeps
        them): no stored path is (the indexer skips such names), and Milvus would refuse the expression."""
        if not is_utf8(root):
            return
        folder = root.rstrip(sep) + sep
        stem = folder.split("%")[0].split("_")[0]  # LIKE wildcards end the literal prefix
        expr = f"path == {quote(root)} or path like {quote(stem + '%')}"
        for row in self.iter_rows(expr, fields):
            if row["path"] == root or row["path"].startswith(folder):
                yield row

    def by_sha256(self, hashes: Iterable[str], fields: list[str] | None = None) -> dict[str, dict]:
        """One stored row (with its vector) per known content hash."""
        hashes = sorted(set(hashes))
        found: dict[str, dict] = {}
        fields = fields or ROW_FIELDS + ["vector"]
        for start in range(0, len(hashes), _BATCH):
            chunk = hashes[start : start + _BATCH]
            expr = f"sha256 in [{', '.join(quote(h) for h in chunk)}]"
            # one query call (a query iterator costs several calls, each paid in full); the iterator
            # only when so many rows share these hashes that one call may not return them all
            self._ensure_loaded()
            rows = self._call("query", self.client.query, self.collection, filter=expr, output_fields=fields,
                              limit=MAX_K, **self._level())
            for row in rows if len(rows) < MAX_K else self.iter_rows(expr, fields):
                found.setdefault(row["sha256"], row)
        return found

    def search(
        self,
        vectors: list[list[float]],
        k: int,
        *,
        filter: str | None = None,
        output_fields: list[str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Top-``k`` rows per query vector: ``[{"id", "score", **fields}]``, best first."""
        k = check_count(k, "k", 1, MAX_K)
        self._ensure_loaded()
        try:
            res = self._retrying(
                self.client.search,
                self.collection,
                data=vectors,
                limit=k,
                filter=filter or "",
                output_fields=output_fields or ["*"],
                search_params={"metric_type": "COSINE", "params": {"ef": max(SEARCH_EF, k)}},
                _echo=filter,
                **self._level(),
            )
        except Exception as exc:  # noqa: BLE001
            if filter and not (self.is_server and is_transient(exc, filter)):  # an outage is not the filter's fault
                raise FilterError(_shortened(f"invalid filter {filter!r}: {_message(_root_cause(exc))}")) from None
            raise self._error("search", exc, filter) from None
        out = []
        for hits in res:
            rows = []
            for hit in hits:
                entity = dict(hit.get("entity") or {})
                entity.pop("vector", None)
                entity["id"] = hit.get("id", entity.get("id"))
                entity["score"] = float(hit.get("distance", 0.0))
                rows.append(entity)
            out.append(rows)
        return out
