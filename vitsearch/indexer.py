"""Incremental sync of folders into the store: new, changed, unchanged, moved, removed.

Mark and sweep: files whose size and mtime match their row are skipped without being opened; the
others are hashed, and a known sha256 reuses the stored vector (moves, renames, copies); only new
content is decoded and embedded. Rows of files that vanished under an indexed root are deleted last,
after everything new is written, so a run that stops half-way never loses rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable, Iterator, Protocol

from .exif import read_exif
from .images import Failure, FileEntry, check_roots, discover
from .store import EXIF_SOURCE, ROW_FIELDS, Store, exif_of, make_row, user_fields

if TYPE_CHECKING:
    from .distributed import Dist
    from .embed import Encoder

FLUSH_ROWS = 256
FLUSH_SECONDS = 5.0  # a killed run keeps all but the last few seconds of its work


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...


ProgressFactory = Callable[[int, str], ContextManager[Progress]]


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def no_progress(total: int, desc: str):
    yield _NoProgress()


@dataclass
class IndexSummary:
    """What an index run did: files ``scanned``, rows ``added``, ``updated``, ``unchanged`` and
    ``removed``; vectors ``reused`` (known content) and ``embedded``; the files that ``failed``, each
    with its reason; the run's ``seconds``. :meth:`as_dict` is what ``index --json`` prints."""

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
            "failed": [f.as_dict() for f in self.failed],
            "seconds": round(self.seconds, 3),
        }


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _row(entry: FileEntry, sha: str, vector, width: int, height: int, exif: dict, fields: dict,
         previous: dict | None) -> dict:
    return make_row(entry.path, entry.size, entry.mtime, sha, width, height, vector, exif=exif, user=fields,
                    previous=previous)


@dataclass
class _Plan:
    work: list[list[tuple]]  # groups of files with the same new content, to embed
    existing: dict[str, dict]  # stored rows under the indexed roots, by path
    seen: set[str]  # every file found


class Indexer:
    """Syncs folders into ``store``; ``encoder_factory`` is called only if something needs embedding."""

    def __init__(
        self,
        store: Store,
        encoder_factory: Callable[[], "Encoder"],
        *,
        batch_size: int | None = None,
        progress: ProgressFactory = no_progress,
    ):
        self.store = store
        self.encoder_factory = encoder_factory
        self.batch_size = batch_size
        self.progress = progress
        self._last_flush = 0.0
        self._wrote = False  # whether this sync wrote anything (then the store is flushed at its end)

    def sync(
        self,
        paths: Iterable[str],
        *,
        keep_missing: bool = False,
        metadata: dict[str, dict] | None = None,
        dist: "Dist | None" = None,
    ) -> IndexSummary:
        """Bring the store in line with the files under ``paths``.

        ``metadata`` maps absolute paths to fields stored with their rows: its values replace stored
        ones, and fields it does not name are kept (also when a file's content changes). The EXIF
        fields of a file (:mod:`vitsearch.exif`) are read whenever its content is (re)written; a
        metadata field of the same name wins over them.

        With ``dist`` (see :mod:`vitsearch.distributed`) every rank of the group calls this: rank 0
        plans, each rank embeds its shard, and rank 0 gets the summary of the whole run.
        """
        start = time.perf_counter()
        self._last_flush = time.monotonic()  # the 5-second flush clock runs per sync
        self._wrote = False
        summary = IndexSummary()
        plan = self._plan(paths, metadata or {}, summary) if dist is None or dist.is_main else None
        work = plan.work if plan else None
        if dist is not None:
            work = dist.broadcast(work)
        if work:
            self._embed(work, summary, dist)
        if dist is not None:
            shards = dist.gather((summary.added, summary.updated, summary.embedded, summary.failed))
            if dist.is_main:
                for added, updated, embedded, failed in shards[1:]:
                    summary.added += added
                    summary.updated += updated
                    summary.embedded += embedded
                    summary.failed.extend(failed)
        if plan is not None and not keep_missing:  # last, once every rank's rows are written
            seen = plan.seen | {f.path for f in summary.failed}
            gone = [row["id"] for path, row in plan.existing.items() if path not in seen]
            summary.removed = self.store.delete(gone)
            self._wrote = self._wrote or bool(gone)
        if self._wrote:  # seal what this run wrote: Milvus Lite searches unsealed rows in Python, row by row
            self.store.flush()
        summary.seconds = time.perf_counter() - start
        return summary

    def _plan(self, paths: Iterable[str], metadata: dict[str, dict], summary: IndexSummary) -> _Plan:
        """Walk, compare with the store, hash what changed, write rows whose content is known; what is
        left to embed becomes ``work``: one list per new content hash of (path, size, mtime, sha256,
        fields, stored row or None, exif) tuples, the first of which is the file to decode."""
        roots = check_roots(paths)
        entries: list[FileEntry] = []
        for entry in discover(roots, summary.failed):
            try:
                entry.path.encode("utf-8")
            except UnicodeEncodeError:
                summary.failed.append(Failure(entry.path, "file name is not valid UTF-8 (rename the file)"))
                continue
            entries.append(entry)
        summary.scanned = len(entries)
        if metadata:
            summary.metadata_unmatched = len(metadata.keys() - {e.path for e in entries})

        existing: dict[str, dict] = {}
        for root in roots:
            for row in self.store.rows_under(root, ROW_FIELDS + [EXIF_SOURCE]):
                existing[row["path"]] = row

        todo, unchanged = [], []
        for entry in entries:
            row = existing.get(entry.path)
            if row and entry.matches(row):
                summary.unchanged += 1
                unchanged.append(entry)
            else:
                todo.append(entry)
        stale = [existing[e.path] for e in unchanged if e.path in metadata or EXIF_SOURCE not in existing[e.path]]
        self._refresh(stale, metadata, summary)
        old_fields = self._old_fields([existing[e.path] for e in todo if e.path in existing])

        def fields_of(entry: FileEntry) -> dict:
            return {**old_fields.get(entry.path, {}), **metadata.get(entry.path, {})}

        hashes, exifs = self._hash(todo, summary)
        todo = [e for e in todo if e.path in hashes]
        known = self.store.by_sha256(hashes.values()) if todo else {}
        pending: list[dict] = []
        to_embed: dict[str, list[tuple]] = {}
        for entry in todo:
            sha = hashes[entry.path]
            old = existing.get(entry.path)
            if sha in known:
                src = known[sha]
                pending.append(_row(entry, sha, src["vector"], src["width"], src["height"], exifs[entry.path],
                                    fields_of(entry), old))
                if old and old["sha256"] == sha:
                    summary.unchanged += 1  # touched, same content: refresh size/mtime only
                else:
                    summary.reused += 1
                    self._count(summary, old)
            else:
                item = (entry.path, entry.size, entry.mtime, sha, fields_of(entry), old, exifs[entry.path])
                to_embed.setdefault(sha, []).append(item)
        self._flush(pending, force=True)
        return _Plan(list(to_embed.values()), existing, {e.path for e in entries})

    def _embed(self, work: list[list[tuple]], summary: IndexSummary, dist: "Dist | None") -> None:
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
        with self.progress(len(mine), "embedding") as bar:
            for r in range(rounds):
                groups = mine[r * chunk : (r + 1) * chunk]
                firsts = {group[0][0]: group for group in groups}
                results = encoder.encode_files(list(firsts), batch_size=self.batch_size) if groups else ()
                for res in results:
                    group = firsts[res.path]
                    if res.vector is None:
                        summary.failed.extend(Failure(item[0], res.error or "cannot decode") for item in group)
                    else:
                        summary.embedded += 1
                        for path, size, mtime, sha, fields, old, exif in group:
                            entry = FileEntry(path, size, mtime)
                            pending.append(_row(entry, sha, res.vector, res.width, res.height, exif, fields, old))
                            if old is not None:
                                summary.updated += 1
                            else:
                                summary.added += 1
                        if not relay:
                            self._flush(pending)
                    bar.update(1)
                if relay:
                    gathered = dist.gather(pending)
                    if dist.is_main:
                        for rows in gathered:
                            self.store.upsert(rows)
                            self._wrote = self._wrote or bool(rows)
                    pending = []
        self._flush(pending, force=True)

    def _full_rows(self, rows: list[dict]) -> Iterator[list[dict]]:
        """The stored rows (vector and metadata included), a bounded chunk at a time."""
        for start in range(0, len(rows), FLUSH_ROWS):
            yield self.store.get([row["id"] for row in rows[start : start + FLUSH_ROWS]], ["*"])

    def _refresh(self, rows: list[dict], metadata: dict[str, dict], summary: IndexSummary) -> None:
        """Rewrite the rows of unchanged files whose metadata differs, or whose EXIF was never read
        (rows written before vitsearch read it): same vector, no embedding."""
        for chunk in self._full_rows(rows):
            changed = []
            for full in chunk:
                wanted = {**user_fields(full), **metadata.get(full["path"], {})}
                exif = exif_of(full)
                if exif is None:
                    exif = read_exif(full["path"])
                    summary.exif_added += 1
                elif wanted == user_fields(full):
                    continue
                summary.metadata_updated += wanted != user_fields(full)
                changed.append(make_row(*(full[k] for k in ROW_FIELDS[1:]), full["vector"], exif=exif, user=wanted))
            self.store.upsert(changed)
            self._wrote = self._wrote or bool(changed)

    def _old_fields(self, rows: list[dict]) -> dict[str, dict]:
        """path -> metadata of the stored rows of files about to be rewritten, so that it survives."""
        out: dict[str, dict] = {}
        for chunk in self._full_rows(rows):
            for full in chunk:
                fields = user_fields(full)
                if fields:
                    out[full["path"]] = fields
        return out

    @staticmethod
    def _count(summary: IndexSummary, old: dict | None) -> None:
        if old is None:
            summary.added += 1
        else:
            summary.updated += 1

    def _flush(self, pending: list[dict], force: bool = False) -> None:
        due = time.monotonic() - self._last_flush >= FLUSH_SECONDS
        if pending and (force or due or len(pending) >= FLUSH_ROWS):
            self.store.upsert(pending)
            self._wrote = True
            pending.clear()
            self._last_flush = time.monotonic()

    def _hash(self, entries: list[FileEntry], summary: IndexSummary) -> tuple[dict[str, str], dict[str, dict]]:
        """path -> sha256 and path -> EXIF fields of the files about to be written."""

        def one(entry: FileEntry):
            try:
                return entry.path, sha256_file(entry.path), read_exif(entry.path), None
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
