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

from .images import Failure, FileEntry, check_roots, discover
from .metadata import RESERVED
from .store import ROW_FIELDS, Store, path_id

if TYPE_CHECKING:
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
    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    reused: int = 0  # rows whose vector came from a stored row with the same content
    embedded: int = 0
    metadata_updated: int = 0  # unchanged files whose metadata changed (no re-embedding)
    metadata_unmatched: int = 0  # metadata entries naming no file under the indexed paths
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
            "failed": [f.as_dict() for f in self.failed],
            "seconds": round(self.seconds, 3),
        }


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def user_fields(row: dict) -> dict:
    """The metadata of a stored row: every field but vitsearch's own."""
    return {k: v for k, v in row.items() if k not in RESERVED and not k.startswith("$")}


def _row(entry: FileEntry, sha: str, vector, width: int, height: int, fields: dict | None = None) -> dict:
    return {
        **(fields or {}),
        "id": path_id(entry.path),
        "path": entry.path,
        "size": entry.size,
        "mtime": entry.mtime,
        "sha256": sha,
        "width": int(width),
        "height": int(height),
        "vector": [float(v) for v in vector],
    }


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

    def sync(
        self, paths: Iterable[str], *, keep_missing: bool = False, metadata: dict[str, dict] | None = None
    ) -> IndexSummary:
        """Bring the store in line with the files under ``paths``.

        ``metadata`` maps absolute paths to fields stored with their rows: its values replace stored
        ones, and fields it does not name are kept (also when a file's content changes).
        """
        start = time.perf_counter()
        metadata = metadata or {}
        self._last_flush = time.monotonic()  # the 5-second flush clock runs per sync
        roots = check_roots(paths)
        summary = IndexSummary()
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
            for row in self.store.rows_under(root):
                existing[row["path"]] = row

        todo, unchanged = [], []
        for entry in entries:
            row = existing.get(entry.path)
            if row and row["size"] == entry.size and row["mtime"] == entry.mtime:
                summary.unchanged += 1
                unchanged.append(entry)
            else:
                todo.append(entry)
        self._update_metadata([existing[e.path] for e in unchanged if e.path in metadata], metadata, summary)
        old_fields = self._old_fields([existing[e.path] for e in todo if e.path in existing])

        def fields_of(entry: FileEntry) -> dict:
            return {**old_fields.get(entry.path, {}), **metadata.get(entry.path, {})}

        hashes = self._hash(todo, summary)
        todo = [e for e in todo if e.path in hashes]
        known = self.store.by_sha256(hashes.values()) if todo else {}
        pending: list[dict] = []
        to_embed: dict[str, list[FileEntry]] = {}
        for entry in todo:
            sha = hashes[entry.path]
            old = existing.get(entry.path)
            if sha in known:
                src = known[sha]
                pending.append(_row(entry, sha, src["vector"], src["width"], src["height"], fields_of(entry)))
                if old and old["sha256"] == sha:
                    summary.unchanged += 1  # touched, same content: refresh size/mtime only
                else:
                    summary.reused += 1
                    self._count(summary, old)
            else:
                to_embed.setdefault(sha, []).append(entry)
        self._flush(pending, force=True)

        if to_embed:
            firsts = [group[0] for group in to_embed.values()]
            encoder = self.encoder_factory()
            with self.progress(len(firsts), "embedding") as bar:
                for res in encoder.encode_files([e.path for e in firsts], batch_size=self.batch_size):
                    group = to_embed[hashes[res.path]]
                    if res.vector is None:
                        summary.failed.extend(Failure(e.path, res.error or "cannot decode") for e in group)
                    else:
                        summary.embedded += 1
                        for entry in group:
                            pending.append(
                                _row(entry, hashes[entry.path], res.vector, res.width, res.height, fields_of(entry))
                            )
                            self._count(summary, existing.get(entry.path))
                        self._flush(pending)
                    bar.update(1)
            self._flush(pending, force=True)

        if not keep_missing:
            seen = {e.path for e in entries} | {f.path for f in summary.failed}
            gone = [row["id"] for path, row in existing.items() if path not in seen]
            summary.removed = self.store.delete(gone)
        summary.seconds = time.perf_counter() - start
        return summary

    def _full_rows(self, rows: list[dict]) -> Iterator[list[dict]]:
        """The stored rows (vector and metadata included), a bounded chunk at a time."""
        for start in range(0, len(rows), FLUSH_ROWS):
            yield self.store.get([row["id"] for row in rows[start : start + FLUSH_ROWS]], ["*"])

    def _update_metadata(self, rows: list[dict], metadata: dict[str, dict], summary: IndexSummary) -> None:
        """Rewrite the rows of unchanged files whose metadata differs (same vector, no embedding)."""
        for chunk in self._full_rows(rows):
            changed = []
            for full in chunk:
                wanted = {**user_fields(full), **metadata[full["path"]]}
                if wanted != user_fields(full):
                    changed.append({**{k: full[k] for k in ROW_FIELDS}, "vector": full["vector"], **wanted})
            self.store.upsert(changed)
            summary.metadata_updated += len(changed)

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
            pending.clear()
            self._last_flush = time.monotonic()

    def _hash(self, entries: list[FileEntry], summary: IndexSummary) -> dict[str, str]:
        def one(entry: FileEntry):
            try:
                return entry.path, sha256_file(entry.path), None
            except OSError as exc:
                return entry.path, None, f"cannot read: {exc.strerror or exc}"

        out: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for path, sha, error in pool.map(one, entries):
                if sha is None:
                    summary.failed.append(Failure(path, error))
                else:
                    out[path] = sha
        return out
