"""Where images come from: folders, feeds, object-store prefixes and URLs, behind one small interface.

A source lists :class:`Entry` objects: a key, which becomes the row's ``path`` (an absolute file path,
or the URL / URI as given), and the change token the listing knows (size and mtime of a file; ETag,
size and last-modified of an object; nothing for a URL in a feed). It also names the stored rows it
answers for, which the indexer compares with the listing and sweeps at the end: the rows under a
folder or a prefix, the rows a feed listed. The bytes are opened by the encoder's decode workers for
local files and by :class:`~vitsearch.fetch.Fetcher` for remote keys; when the listing knew no token,
the fetcher asks the server whether the image changed (a conditional request), so that an unchanged
image costs a request and no download.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .errors import VitsearchError
from .feeds import feed_format, read_feed
from .fetch import is_remote, local_path, scheme_of
from .images import Failure, FileEntry, check_roots, discover, is_image_name
from .store import Store, path_id, quote

if TYPE_CHECKING:
    from .fetch import Fetcher


@dataclass(frozen=True)
class Entry:
    """One image a source lists: its key and what the listing knows of its version."""

    path: str  # the row's key: an absolute file path, or the URL / URI as given
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None
    feed: str | None = None  # the feed file that lists it; its rows are swept with the feed
    fields: Mapping | None = field(default=None, compare=False)  # the feed row's metadata

    @property
    def remote(self) -> bool:
        return is_remote(self.path)

    @property
    def known(self) -> bool:
        """Whether the listing gave a change token (else only a conditional fetch can tell)."""
        return self.etag is not None or (self.size is not None and self.mtime is not None)

    def matches(self, row: dict) -> bool:
        """Whether the stored ``row`` still describes this image: the same ETag where both have one,
        else the same size and mtime (local files: :meth:`FileEntry.matches`)."""
        if not self.remote:
            return FileEntry(self.path, self.size, self.mtime).matches(row)
        if self.etag and row.get("etag"):
            return self.etag == row["etag"] and (self.size is None or self.size == row.get("size"))
        known = self.size is not None and bool(self.mtime)
        return known and row.get("size") == self.size and row.get("mtime") == self.mtime

    def source_fields(self) -> dict:
        """The fields vitsearch stores about where the row came from (see ``store.SOURCE_FIELDS``)."""
        return {name: value for name, value in (("etag", self.etag), ("feed", self.feed)) if value}


class Source(Protocol):
    def entries(self, failures: list[Failure]) -> Iterator[Entry]:
        """The images, each once; what cannot be listed is appended to ``failures``."""

    def stored(self, store: Store, fields: list[str]) -> Iterator[dict]:
        """The stored rows this source answers for (called after :meth:`entries`)."""


class Folders:
    """Local files and folders, walked recursively (see :func:`vitsearch.images.discover`)."""

    def __init__(self, roots: Sequence[str | os.PathLike]):
        self.roots = check_roots(roots)

    def entries(self, failures: list[Failure]) -> Iterator[Entry]:
        for found in discover(self.roots, failures):
            yield Entry(found.path, found.size, found.mtime)

    def stored(self, store: Store, fields: list[str]) -> Iterator[dict]:
        for root in self.roots:
            yield from store.rows_under(root, fields)


class Prefix:
    """Every image object under an object-store URI (``s3://bucket/prefix``), listed recursively."""

    def __init__(self, uri: str, fetcher: Fetcher):
        stripped = uri.rstrip("/")
        self.uri = uri if stripped.endswith(":") else stripped  # s3://bucket/prefix/ -> s3://bucket/prefix
        self.fetcher = fetcher

    def entries(self, failures: list[Failure]) -> Iterator[Entry]:
        from .fetch import FetchError, fs_reason, object_token

        # A prefix that cannot be listed ends the run (as a missing folder does): going on would sweep
        # away its stored rows as if its objects were gone.
        try:
            fs, path = self.fetcher.filesystem(self.uri)
        except FetchError as exc:
            raise VitsearchError(f"cannot list {self.uri}: {exc}") from None
        scheme = scheme_of(self.uri)
        fs.invalidate_cache()  # fsspec keeps listings per filesystem: this run lists afresh
        try:
            listing = fs.find(path, detail=True, withdirs=False)
        except FileNotFoundError:
            raise VitsearchError(f"no such bucket or prefix: {self.uri}") from None
        except Exception as exc:  # noqa: BLE001 - fsspec's backends raise many types (botocore's, aiohttp's…)
            raise VitsearchError(f"cannot list {self.uri}: {fs_reason(exc)}") from None
        for name in sorted(listing):
            info = listing[name]
            given = name.rstrip("/") == path.rstrip("/")  # the URI names one object: taken whatever its name
            if info.get("type", "file") != "file" or not (given or is_image_name(name)):
                continue
            size, mtime, etag = object_token(info)
            yield Entry(f"{scheme}://{name}", size, mtime or 0.0, etag)

    def stored(self, store: Store, fields: list[str]) -> Iterator[dict]:
        yield from store.rows_under(self.uri, fields, sep="/")


class Url:
    """One image URL given on the command line."""

    def __init__(self, url: str):
        self.url = url

    def entries(self, failures: list[Failure]) -> Iterator[Entry]:
        yield Entry(self.url)

    def stored(self, store: Store, fields: list[str]) -> Iterator[dict]:
        yield from store.get([path_id(self.url)], fields)


class Feed:
    """A product feed (see :mod:`vitsearch.feeds`): its rows' images, with the rows' metadata.

    Relative local paths are taken from the feed's folder. An image listed by several rows is
    indexed once, with the last row's metadata. The rows a feed answers for are those whose ``feed``
    field names it, and any row of an image it lists (an image indexed before, e.g. by another feed).
    """

    def __init__(self, path: str | os.PathLike, image_column: str, id_column: str | None = None):
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self.path):
            raise VitsearchError(f"no such feed: {path}")
        self.image_column, self.id_column = image_column, id_column
        self._keys: list[str] = []

    def entries(self, failures: list[Failure]) -> Iterator[Entry]:
        base = os.path.dirname(self.path)
        found: dict[str, dict] = {}  # key -> metadata, in the order first listed
        for row in read_feed(self.path, self.image_column, self.id_column):
            if row.error:
                failures.append(Failure(f"{self.path} ({row.where})", row.error))
                continue
            for image in row.images:
                key = image if is_remote(image) else _local(base, image)
                found[key] = row.fields  # a later row's fields win; the place stays the first
        self._keys = list(found)
        for key, fields in found.items():
            if is_remote(key):
                yield Entry(key, feed=self.path, fields=fields)
                continue
            try:
                st = os.stat(key)
            except OSError as exc:
                failures.append(Failure(key, f"cannot stat: {exc.strerror or exc}"))
                continue
            if not stat.S_ISREG(st.st_mode):
                failures.append(Failure(key, "not a regular file"))
                continue
            yield Entry(key, st.st_size, st.st_mtime, feed=self.path, fields=fields)

    def stored(self, store: Store, fields: list[str]) -> Iterator[dict]:
        seen = set()
        for row in store.iter_rows(f"feed == {quote(self.path)}", fields):
            seen.add(row["path"])
            yield row
        rest = [path_id(key) for key in self._keys if key not in seen]
        for row in store.get(rest, fields) if rest else ():
            if row["path"] not in seen:
                yield row


def _local(base: str, path: str) -> str:
    return os.path.abspath(os.path.join(base, os.path.expanduser(local_path(path))))


def open_sources(
    paths: Iterable[str | os.PathLike],
    *,
    image_column: str | None = None,
    id_column: str | None = None,
    fetcher: Fetcher | None = None,
) -> list[Source]:
    """The sources that ``paths`` name: feeds (with ``image_column``), URLs, object-store URIs, and
    local files and folders (one :class:`Folders` for all, so that overlapping folders count once)."""
    sources: list[Source] = []
    local: list[str] = []
    feeds = 0
    for item in paths:
        text = os.fspath(item)
        scheme = scheme_of(text)
        if scheme in ("http", "https"):
            sources.append(Url(text))
        elif scheme not in (None, "file"):
            if fetcher is None:
                raise VitsearchError(f"{text}: indexing object-store URIs needs a fetcher")
            sources.append(Prefix(text, fetcher))
        elif feed_format(text) and not os.path.isdir(_local(os.getcwd(), text)):
            if not image_column:
                raise VitsearchError(f"{text} looks like a product feed: give --image-column (the column of image "
                                     "URLs or paths)")
            sources.append(Feed(_local(os.getcwd(), text), image_column, id_column))
            feeds += 1
        else:
            local.append(_local(os.getcwd(), text) if scheme == "file" else text)
    if (image_column or id_column) and not feeds:
        raise VitsearchError("--image-column and --id-column apply to feeds (.csv, .tsv, .jsonl, .parquet files)")
    if local:
        sources.insert(0, Folders(local))
    if not sources:
        raise VitsearchError("no path given")
    return sources
