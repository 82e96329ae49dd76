"""Incremental sync of sources into the store: new, changed, unchanged, moved, removed.

Mark and sweep, one algorithm for every source (folders, feeds, object-store prefixes, URLs; see
:mod:`vitsearch.sources`): images whose change token matches their row (size and mtime, ETag) are
skipped without being opened; the others are hashed, and a known sha256 reuses the stored vector
(moves, renames, copies); only new content is decoded and embedded. Remote images whose token the
listing did not give are fetched with a conditional request, so an unchanged one is not downloaded.
Rows the sources answer for that the listing did not see are deleted last, after everything new is
written, so a run that stops half-way never loses rows.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ImageError, StoreError, VitsearchError
from .exif import read_exif
from .images import Failure, check_file
from .progress import Callback, emit
from .sources import Entry, Folders, Source
from .store import (
    EXIF_SOURCE,
    FEED_SOURCE,
    ROW_FIELDS,
    SOURCE_FIELDS,
    Store,
    exif_of,
    fields_to_keep,
    is_utf8,
    make_row,
    user_fields,
)

if TYPE_CHECKING:
    from .distributed import Dist
    from .embed import Encoder
    from .fetch import Fetched, Fetcher

FLUSH_ROWS = 256
FLUSH_SECONDS = 5.0  # a killed run keeps all but the last few seconds of its work
STORED_FIELDS = ROW_FIELDS + SOURCE_FIELDS + [EXIF_SOURCE, FEED_SOURCE]  # what the comparison with a listing reads


@dataclass
class IndexSummary:
    """What an index run did: files ``scanned`` (every one found, those that failed on the walk too), rows
    ``added``, ``updated``, ``unchanged`` and ``removed``; vectors ``embedded``, and ``reused`` (a file whose
    content was known: stored, or a copy of another file of this run); the files that ``failed``, each
    with its reason; the run's ``seconds``. :meth:`as_dict` is what ``index --json`` prints. So
    ``added + updated == embedded + reused`` when nothing failed to decode."""

    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    reused: int = 0  # rows whose vector came from a stored row with the same content
    embedded: int = 0
    metadata_updated: int = 0  # unchanged files whose metadata changed (no re-embedding)
    metadata_unmatched: int = 0  # metadata entries naming no file under the indexed paths
    exif_added: int = 0  # unchanged files indexed before vitsearch read EXIF, whose EXIF was read now
    fetched: int = 0  # remote images downloaded (not those a conditional request found unchanged)
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "scanned": self.scanned,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "reused": self.reused,
            "embedded": self.embedded,
            "metadata_updated": self.metadata_updated,
            "metadata_unmatched": self.metadata_unmatched,
            "exif_added": self.exif_added,
            "fetched": self.fetched,
            "failed": [f.as_dict() for f in self.failed],
            "seconds": round(self.seconds, 3),
        }


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_of(row: dict) -> dict:
    """The source fields of a stored row (see :meth:`Entry.source_fields`)."""
    return {name: row[name] for name in SOURCE_FIELDS if row.get(name)}


def _row(entry: Entry, sha: str, vector, width: int, height: int, exif: dict, fields: dict,
         previous: dict | None) -> dict:
    return make_row(entry.path, entry.size, entry.mtime, sha, width, height, vector, exif=exif, user=fields,
                    source=entry.source_fields(), previous=previous, feed_fields=_columns(entry))


def _columns(entry: Entry) -> list[str] | None:
    """The columns of the feed row that lists ``entry``; None for an image no feed lists."""
    return None if entry.fields is None else list(entry.fields)


@dataclass
class _Plan:
    work: list[list[tuple]]  # groups of local files with the same new content, to embed
    existing: dict[str, dict]  # stored rows the sources answer for, by path
    seen: set[str]  # every image listed
    remote: list[Entry] = field(default_factory=list)  # remote images to fetch (or ask whether they changed)
    metadata: dict[str, dict] = field(default_factory=dict)  # the metadata given and the feeds' rows, by path


@dataclass
class _Download:
    """A fetched image, decoded for the model on the fetch thread (its bytes are not kept)."""

    entry: Entry  # with the token the server gave (size, Last-Modified, ETag)
    sha256: str
    pixels: np.ndarray
    width: int
    height: int
    exif: dict  # the EXIF fields of the fetched bytes (see vitsearch.exif)
    from_cache: bool = False  # the bytes came from the fetch cache (the server said "not modified")


def as_sources(paths: Iterable) -> list[Source]:
    """Sources as given, plus one :class:`Folders` for the plain paths among ``paths``."""
    sources, local = [], []
    for item in paths:
        (sources if hasattr(item, "entries") else local).append(item)
    return ([Folders(local)] if local or not sources else []) + sources


class Indexer:
    """Syncs sources into ``store``; ``encoder_factory`` is called only if something needs embedding."""

    def __init__(
        self,
        store: Store,
        encoder_factory: Callable[[], Encoder],
        *,
        batch_size: int | None = None,
        progress: Callback | None = None,
        fetcher: Fetcher | None = None,
    ):
        self.store = store
        self.encoder_factory = encoder_factory
        self.batch_size = batch_size
        self.progress = progress
        self.fetcher = fetcher  # opens remote images; needed only when a source lists some
        self._last_flush = 0.0
        self._wrote = False  # whether this sync wrote anything (then the store is flushed at its end)

    def sync(
        self,
        paths: Iterable[str | os.PathLike | Source],
        *,
        keep_missing: bool = False,
        metadata: dict[str, dict] | None = None,
        dist: Dist | None = None,
        kept: dict[str, dict] | None = None,
    ) -> IndexSummary:
        """Bring the store in line with the images that ``paths`` list: sources, or local files and folders.

        ``metadata`` maps absolute paths (or URLs) to fields stored with their rows: its values replace
        stored ones, and fields it does not name are kept (also when a file's content changes). The EXIF
        fields of an image (:mod:`vitsearch.exif`) are read whenever its content is (re)written, from
        the file or the fetched bytes; a metadata field of the same name wins over them.

        ``kept`` (a reindex: the metadata of the rows of the collection being replaced, by path) lies
        under ``metadata`` and the feeds' columns: the new rows keep it, and it is not counted as
        unmatched.

        With ``dist`` (see :mod:`vitsearch.distributed`) every rank of the group calls this: rank 0
        plans, each rank embeds its shard, and rank 0 gets the summary of the whole run.
        """
        start = time.perf_counter()
        self._last_flush = time.monotonic()  # the 5-second flush clock runs per sync
        self._wrote = False
        summary = IndexSummary()
        sources = as_sources(paths)
        plan = self._plan(sources, metadata or {}, summary, kept or {}) if dist is None or dist.is_main else None
        if plan and plan.remote and dist is not None:
            raise VitsearchError("remote images are indexed by one process, not under torchrun")
        work = plan.work if plan else None
        if dist is not None:
            work = dist.broadcast(work)
        if work:
            self._embed(work, summary, dist)
        if dist is not None:
            shards = dist.gather((summary.added, summary.updated, summary.embedded, summary.reused, summary.failed))
            if dist.is_main:
                for added, updated, embedded, reused, failed in shards[1:]:
                    summary.added += added
                    summary.updated += updated
                    summary.embedded += embedded
                    summary.reused += reused
                    summary.failed.extend(failed)
        if plan is not None and plan.remote:
            self._fetch(plan, summary)
        if plan is not None and not keep_missing:  # last, once every rank's rows are written
            seen = plan.seen | {f.path for f in summary.failed}
            gone = [row["id"] for path, row in plan.existing.items() if path not in seen]
            summary.removed = self.store.delete(gone)
            self._wrote = self._wrote or bool(gone)
        if self._wrote:  # seal what this run wrote: Milvus Lite searches unsealed rows in Python, row by row
            self.store.flush()
        summary.seconds = time.perf_counter() - start
        return summary

    def _plan(self, sources: list[Source], metadata: dict[str, dict], summary: IndexSummary,
              kept: dict[str, dict]) -> _Plan:
        """List, compare with the store, hash the local files that changed, write rows whose content is
        known; what is left to embed becomes ``work``: one list per new content hash of (entry, sha256,
        fields, stored row or None, EXIF fields) tuples, the first of which is the file to decode. Remote images not known
        to be unchanged are left to :meth:`_fetch`."""
        found: dict[str, Entry] = {}
        failed_before = len(summary.failed)
        for source in sources:
            for entry in source.entries(summary.failed):
                if not is_utf8(entry.path):
                    summary.failed.append(Failure(entry.path, "file name is not valid UTF-8 (rename the file)"))
                    continue
                first = found.setdefault(entry.path, entry)  # listed twice (a folder and a feed): once
                if first is not entry and entry.fields is not None:
                    found[entry.path] = replace(first, feed=entry.feed, fields=entry.fields)  # with the feed's row
        entries = list(found.values())
        listed = set(found)
        summary.scanned = len(entries) + len(summary.failed) - failed_before  # what failed on the walk was found too
        if metadata:
            summary.metadata_unmatched = len(metadata.keys() - listed)
        metadata = dict(metadata)
        for entry in entries:
            if entry.fields is not None:  # a feed row's columns; a --metadata file's fields win
                metadata[entry.path] = {**entry.fields, **metadata.get(entry.path, {})}
            if kept.get(entry.path):  # a reindex: the replaced row's metadata, under what is given now
                metadata[entry.path] = {**kept[entry.path], **metadata.get(entry.path, {})}

        existing: dict[str, dict] = {}
        for source in sources:
            for row in source.stored(self.store, STORED_FIELDS):
                existing[row["path"]] = row

        todo, unchanged, remote = [], [], []
        for entry in entries:
            row = existing.get(entry.path)
            if row and entry.matches(row):
                summary.unchanged += 1
                unchanged.append(entry)
            elif entry.remote:
                remote.append(entry)
            else:
                todo.append(entry)
        self._refresh(unchanged, existing, metadata, summary)
        hashes, exifs = self._hash(todo, summary)
        todo = [e for e in todo if e.path in hashes]
        items = [(e, hashes[e.path], exifs[e.path]) for e in todo]
        pending, to_embed = self._place(items, existing, metadata, summary)
        self._flush(pending, force=True)
        return _Plan(list(to_embed.values()), existing, listed, remote, metadata)

    def _place(
        self,
        items: list[tuple[Entry, str, dict]],
        existing: dict[str, dict],
        metadata: dict[str, dict],
        summary: IndexSummary,
        recent: dict[str, dict] | None = None,
    ) -> tuple[list[dict], dict[str, list[tuple]]]:
        """Rows for the ``(entry, sha256, exif)`` items whose content the store (or ``recent``, rows not yet
        written) already holds, and the rest grouped by content to embed. An image whose content
        changed keeps its stored metadata, with ``metadata``'s fields over it."""
        recent = recent or {}
        old_fields = self._old_fields([(e, existing[e.path]) for e, _, _ in items if e.path in existing])
        wanted = {sha for _, sha, _ in items} - recent.keys()
        known = {**(self.store.by_sha256(wanted) if wanted else {}), **recent}
        pending: list[dict] = []
        to_embed: dict[str, list[tuple]] = {}
        for entry, sha, exif in items:
            old = existing.get(entry.path)
            fields = {**old_fields.get(entry.path, {}), **metadata.get(entry.path, {})}
            if sha in known:
                src = known[sha]
                pending.append(_row(entry, sha, src["vector"], src["width"], src["height"], exif, fields, old))
                if old and old["sha256"] == sha:
                    summary.unchanged += 1  # touched, same content: refresh size/mtime only
                else:
                    summary.reused += 1
                    self._count(summary, old)
            else:
                to_embed.setdefault(sha, []).append((entry, sha, fields, old, exif))
        return pending, to_embed

    def _embed(self, work: list[list[tuple]], summary: IndexSummary, dist: Dist | None) -> None:
        """Embed the first file of each group in ``work`` (this rank's shard of it) and write a row for
        every file of the group. Without a server to write to, the ranks hand their rows to rank 0
        in rounds of FLUSH_ROWS images, all ranks in step."""
        rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
        mine = work[rank::world]
        relay = dist is not None and not self.store.is_server
        encoder = self.encoder_factory() if mine else None
        pending: list[dict] = []
        chunk = FLUSH_ROWS if relay else max(1, len(mine))
        rounds = -(-len(work[0::world]) // chunk) if relay else 1  # rank 0's shard is the longest
        done = 0
        emit(self.progress, "embedding", done=done, total=len(mine))
        try:
            for r in range(rounds):
                groups = mine[r * chunk : (r + 1) * chunk]
                firsts = {group[0][0].path: group for group in groups}
                results = encoder.encode_files(list(firsts), batch_size=self.batch_size) if groups else ()
                for res in results:
                    group = firsts[res.path]
                    if res.vector is None:
                        summary.failed.extend(Failure(item[0].path, res.error or "cannot decode") for item in group)
                    else:
                        summary.embedded += 1
                        for i, (entry, sha, fields, old, exif) in enumerate(group):
                            pending.append(_row(entry, sha, res.vector, res.width, res.height, exif, fields, old))
                            summary.reused += i > 0  # a copy within this run: the first one's vector
                            self._count(summary, old)
                        if not relay:
                            self._flush(pending)
                    done += 1
                    emit(self.progress, "embedding", done=done, total=len(mine))
                if relay:
                    gathered = dist.gather(pending)
                    if dist.is_main:
                        for rows in gathered:
                            self.store.upsert(rows)
                            self._wrote = self._wrote or bool(rows)
                    pending.clear()
        except BaseException as exc:
            # Ctrl-C, a failure of the model: what is embedded is written first (a re-run skips it); not when
            # the store itself failed (retrying it would only delay the error)
            if not relay and pending and not isinstance(exc, StoreError):
                try:
                    self.store.upsert(pending)
                    self._wrote = True
                except Exception:  # noqa: BLE001, S110 - the first error is the one to report
                    pass
            raise
        self._flush(pending, force=True)

    def _fetch(self, plan: _Plan, summary: IndexSummary) -> None:
        """Fetch the remote images of ``plan`` concurrently and index them as they arrive.

        An image whose listing gave no token is asked for with its row's validators (ETag,
        Last-Modified): "not modified" makes it unchanged without a download. The fetch threads also
        decode, so this thread only looks up known content and embeds full batches while the next
        images download; rows are written as for local files.
        """
        if self.fetcher is None:
            raise VitsearchError("remote images need a fetcher (see vitsearch.fetch.Fetcher)")
        encoder_lock = threading.Lock()
        encoders: list = []

        def encoder():
            with encoder_lock:
                if not encoders:
                    encoders.append(self.encoder_factory())
                return encoders[0]

        def prepare(fetched: Fetched) -> _Download:
            try:
                pixels, width, height = encoder().prepare(fetched.data)
            except ImageError as exc:
                raise ImageError(f"{exc}{fetched.hint}") from None
            token = Entry(fetched.key, fetched.size, fetched.mtime or 0.0, fetched.etag)
            return _Download(token, fetched.sha256, pixels, width, height, read_exif(fetched.data), fetched.from_cache)

        jobs = []
        for entry in plan.remote:
            row = plan.existing.get(entry.path)
            ask = row is not None and not entry.known  # else the listing has decided: changed
            jobs.append((entry, entry.path, (row.get("etag") or None) if ask else None,
                         (row.get("mtime") or None) if ask else None))
        batch = self.batch_size or 32
        window: list[tuple[Entry, _Download]] = []
        unchanged: list[Entry] = []
        pending: list[dict] = []
        recent: dict[str, dict] = {}  # content embedded by this run and not yet written
        emit(self.progress, "fetching", done=0, total=len(jobs))
        for done, (entry, outcome) in enumerate(self.fetcher.stream(jobs, prepare), start=1):
            if outcome is None:
                row = plan.existing[entry.path]
                unchanged.append(replace(entry, size=row["size"], mtime=row["mtime"], etag=row.get("etag")))
                summary.unchanged += 1
            elif isinstance(outcome, Exception):
                summary.failed.append(Failure(entry.path, str(outcome)))
            else:
                summary.fetched += not outcome.from_cache  # downloaded, not read from the cache
                got = outcome.entry
                window.append((replace(entry, size=got.size, mtime=got.mtime, etag=got.etag), outcome))
            if len(window) >= batch:
                self._index_downloads(window, plan, summary, encoder, pending, recent)
                window = []
            emit(self.progress, "fetching", done=done, total=len(jobs))
        self._index_downloads(window, plan, summary, encoder, pending, recent)
        self._flush(pending, force=True)
        self._refresh(unchanged, plan.existing, plan.metadata, summary)

    def _index_downloads(self, window, plan: _Plan, summary: IndexSummary, encoder: Callable[[], Any],
                         pending: list[dict], recent: dict[str, dict]) -> None:
        """Reuse known content, embed the rest of ``window`` in one model call, queue the rows."""
        if not window:
            return
        downloads = {entry.path: download for entry, download in window}
        items = [(e, d.sha256, d.exif) for e, d in window]
        rows, to_embed = self._place(items, plan.existing, plan.metadata, summary, recent)
        pending.extend(rows)
        groups = list(to_embed.values())
        if groups:
            firsts = [downloads[group[0][0].path] for group in groups]
            vectors = encoder().embed_pixels(np.stack([d.pixels for d in firsts]))
            for group, first, vector in zip(groups, firsts, vectors):
                summary.embedded += 1
                for i, (entry, sha, fields, old, exif) in enumerate(group):
                    row = _row(entry, sha, vector, first.width, first.height, exif, fields, old)
                    pending.append(row)
                    recent[sha] = row
                    summary.reused += i > 0  # a copy within this run: the first one's vector
                    self._count(summary, old)
        if pending and self._flush(pending):
            recent.clear()  # written: the store answers for them now
            if not self.store.is_server:
                # Seal what was written: Milvus Lite scans unsealed rows in Python, and the next window's
                # lookup by content would slow down with every row this run adds (1.5 s at 3,000 rows)
                self.store.flush()

    def _full_rows(self, rows: list[dict]) -> Iterator[list[dict]]:
        """The stored rows (vector and metadata included), a bounded chunk at a time."""
        for start in range(0, len(rows), FLUSH_ROWS):
            yield self.store.get([row["id"] for row in rows[start : start + FLUSH_ROWS]], ["*"])

    def _refresh(
        self, entries: list[Entry], existing: dict[str, dict], metadata: dict[str, dict], summary: IndexSummary
    ) -> None:
        """Rewrite the rows of unchanged images whose metadata or source fields (the feed that lists them)
        differ, or local files whose EXIF was never read (rows written before vitsearch read it): same
        vector, no embedding. Only the fields in question are read to compare; whole rows only for
        those that change. (A remote image's EXIF is read when its bytes are fetched, not here.)"""

        def exif_unread(entry: Entry) -> bool:
            return not entry.remote and EXIF_SOURCE not in existing[entry.path]

        def columns_changed(entry: Entry, row: dict) -> bool:  # a feed's columns: one dropped, or one added
            return entry.fields is not None and sorted(entry.fields) != (row.get(FEED_SOURCE) or [])

        entries = [e for e in entries if e.path in metadata or exif_unread(e)
                   or e.source_fields() != source_of(existing[e.path]) or columns_changed(e, existing[e.path])]
        names = sorted({name for e in entries for name in metadata.get(e.path, {})})
        by_path = {e.path: e for e in entries}
        for start in range(0, len(entries), FLUSH_ROWS):
            chunk = entries[start : start + FLUSH_ROWS]
            stale = []
            for row in self.store.get([existing[e.path]["id"] for e in chunk], STORED_FIELDS + names):
                entry = by_path[row["path"]]
                fields = metadata.get(row["path"], {})
                # a None is "no value", whether the row lacks the field or holds null (an emptied cell)
                if exif_unread(entry) or entry.source_fields() != source_of(row) or columns_changed(entry, row) or any(
                    row.get(name) != value for name, value in fields.items()
                ):
                    stale.append(row)
            changed = []
            for full in next(self._full_rows(stale), []):
                entry = by_path[full["path"]]
                wanted = {**fields_to_keep(full, entry.fields is not None), **metadata.get(full["path"], {})}
                exif = exif_of(full)
                if exif is None:
                    exif = {} if entry.remote else read_exif(full["path"])
                    summary.exif_added += not entry.remote
                given = {k: v for k, v in wanted.items() if v is not None}
                summary.metadata_updated += given != user_fields(full) or entry.source_fields() != source_of(full)
                changed.append(make_row(*(full[k] for k in ROW_FIELDS[1:]), full["vector"], exif=exif, user=wanted,
                                        source=entry.source_fields(), previous=full, feed_fields=_columns(entry)))
            self.store.upsert(changed)
            self._wrote = self._wrote or bool(changed)

    def _old_fields(self, pairs: list[tuple[Entry, dict]]) -> dict[str, dict]:
        """path -> metadata of the stored rows of images about to be rewritten (``(entry, row)`` pairs),
        so that it survives (see :func:`~vitsearch.store.fields_to_keep`)."""
        from_feed = {row["path"]: entry.fields is not None for entry, row in pairs}
        out: dict[str, dict] = {}
        for chunk in self._full_rows([row for _, row in pairs]):
            for full in chunk:
                fields = fields_to_keep(full, from_feed[full["path"]])
                if fields:
                    out[full["path"]] = fields
        return out

    @staticmethod
    def _count(summary: IndexSummary, old: dict | None) -> None:
        if old is None:
            summary.added += 1
        else:
            summary.updated += 1

    def _flush(self, pending: list[dict], force: bool = False) -> bool:
        """Write ``pending`` when it is due (FLUSH_ROWS rows, FLUSH_SECONDS seconds) or forced; True if written."""
        due = time.monotonic() - self._last_flush >= FLUSH_SECONDS
        if pending and (force or due or len(pending) >= FLUSH_ROWS):
            self.store.upsert(pending)
            self._wrote = True
            pending.clear()
            self._last_flush = time.monotonic()
            return True
        return False

    def _hash(self, entries: list[Entry], summary: IndexSummary) -> tuple[dict[str, str], dict[str, dict]]:
        """path -> sha256 and path -> EXIF fields of the local files about to be written; a file whose
        header says it is no image it can index (see :func:`check_file`) fails before it is hashed."""

        def one(entry: Entry):
            try:
                check_file(entry.path)  # its header first: a large file that is no image is not read whole
                return entry.path, sha256_file(entry.path), read_exif(entry.path), None
            except ImageError as exc:
                return entry.path, None, None, str(exc)
            except OSError as exc:
                return entry.path, None, None, f"cannot read: {exc.strerror or exc}"

        hashes: dict[str, str] = {}
        exifs: dict[str, dict] = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for path, sha, exif, error in pool.map(one, entries):
                if sha is None:
                    summary.failed.append(Failure(path, error))
                else:
                    hashes[path], exifs[path] = sha, exif
        return hashes, exifs
