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
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable, Protocol

from .images import Failure, FileEntry, check_roots, discover
from .store import Store, path_id

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
            "failed": [f.as_dict() for f in self.failed],
            "seconds": round(self.seconds, 3),
        }


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _row(entry: FileEntry, sha: str, vector, width: int, height: int) -> dict:
    return {
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

    def sync(self, paths: Iterable[str], *, keep_missing: bool = False) -> IndexSummary:
        start = time.perf_counter()
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

        existing: dict[str, dict] = {}
        for root in roots:
            for row in self.store.rows_under(root):
                existing[row["path"]] = row

        todo = []
        for entry in entries:
            row = existing.get(entry.path)
            if row and row["size"] == entry.size and row["mtime"] == entry.mtime:
                summary.unchanged += 1
            else:
                todo.append(entry)

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
                pending.append(_row(entry, sha, src["vector"], src["width"], src["height"]))
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
                            pending.append(_row(entry, hashes[entry.path], res.vector, res.width, res.height))
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
