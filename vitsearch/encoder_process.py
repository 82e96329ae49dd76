"""The encoder in a second process, started at once, so that its model loads while the store opens.

A one-shot ``vitsearch index`` of local files begins with two pieces of work that do not depend on
each other: opening the store (importing pymilvus, starting Milvus Lite, the collection) and readying
the model (``import torch``, the weights). Each takes about two seconds on a small CPU, and both are
Python code that holds the GIL, so two threads cannot overlap them; two processes can.
:class:`EncoderProcess` starts ``python -m vitsearch.encoder_process`` at the beginning of the run.
The child builds the same :class:`~vitsearch.embed.Encoder` (decode workers, the shared ViT core)
and streams :class:`~vitsearch.images.FileResult` rows back over a pipe, while this process, which
then never imports torch, plans the run and writes the rows.

Used by :meth:`vitsearch.api.VisualSearch.index` (when every source is local) and
:meth:`~vitsearch.api.VisualSearch.query` when the instance was made with ``encoder_process=True``
(the CLI's ``index`` and ``query`` do, unless ``VITSEARCH_ENCODER_PROCESS=0``). A query whose images
are all indexed needs no model: its child is ended unused. A long-lived process (a notebook, the
server) keeps its encoder in-process instead: it pays the start-up once.

The protocol is pickled tuples, one per message. Parent to child: the options, then requests,
``("encode", paths, batch_size)`` (files, streamed) or ``("embed", images, batch_size)`` (query
images, one answer), then ``("close",)``. Child to parent: ``("spec", info)`` as soon as the model
is known (before torch is imported), ``("ready", info)`` once torch is (the weights load with the
first request, while its first images decode), then for ``encode`` one ``("result", row)`` per path
and ``("done",)``, for ``embed`` one ``("vectors", array)``; ``("error", kind, message)`` replaces
whatever could not be done.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from . import errors
from .errors import VitsearchError
from .images import FileResult

if TYPE_CHECKING:
    from typing_extensions import Self

ENV = "VITSEARCH_ENCODER_PROCESS"  # "0": the CLI embeds in its own process, as the Python API does
STDERR_TAIL = 2000  # characters of the child's stderr quoted when it stops unexpectedly


def enabled() -> bool:
    """Whether the CLI should embed in a second process (``$VITSEARCH_ENCODER_PROCESS``, default on)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def follow_parent() -> None:
    """Tie this process to its parent: Ctrl-C is left to the parent (which ends us), and on Linux the
    kernel ends us when the parent dies (PR_SET_PDEATHSIG), so no child outlives a killed run. Used
    by the encoder process and by the decode workers (:func:`vitsearch.embed.worker_init`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _error(kind: str, message: str) -> VitsearchError:
    """The child's exception, as the same vitsearch error type when it is one."""
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, VitsearchError):
        try:
            return cls(message)
        except TypeError:  # an error type with another signature
            pass
    return VitsearchError(f"embedding failed ({kind}): {message}")


class EncoderProcess:
    """An :class:`~vitsearch.embed.Encoder` of ``model`` (None: the bundled one) in a child process.

    It starts at once; :attr:`fingerprint` is known as soon as the child has read the model's record.
    It offers what indexing local files and querying need, ``encode_files`` and ``encode``. Close it
    (or use it as a context manager) to end the child.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = "auto",
        precision: str | None = "auto",
        batch_size: int | None = None,
        num_workers: int | None = None,
    ):
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child; close() closes it
        # The child imports this very vitsearch, also when it was found through a sys.path entry
        # that the environment does not name (a script run from a source tree).
        home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "vitsearch.encoder_process"], env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, close_fds=True,
        )
        self._messages: queue.Queue = queue.Queue()
        self._spec: dict | None = None
        self._ready: dict | None = None
        self._busy = False
        self._closed = False
        self._send({"model": model, "device": device, "precision": precision, "batch_size": batch_size,
                    "num_workers": num_workers})
        self._reader = threading.Thread(target=self._read, name="vitsearch-encoder-process", daemon=True)
        self._reader.start()

    # -- the pipe -------------------------------------------------------------------------------
    def _send(self, message) -> None:
        try:
            pickle.dump(message, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child is gone; the reader reports why

    def _read(self) -> None:
        """Move the child's messages onto the queue as they come, so that it never waits for us."""
        stream = self._proc.stdout
        while True:
            try:
                message = pickle.load(stream)
            except Exception:  # noqa: BLE001 - EOF, a closed pipe or a torn message: the child is gone
                self._messages.put(("stopped",))
                return
            self._messages.put(message)

    def _next(self):
        message = self._messages.get()
        if message[0] == "error":
            raise _error(message[1], message[2])
        if message[0] == "stopped":
            self._messages.put(message)  # every later call sees it too
            raise VitsearchError(self._stopped())
        return message

    def _stopped(self) -> str:
        if self._closed:
            return "the embedding process was closed"
        code = self._proc.wait()
        self._stderr.seek(0)
        tail = self._stderr.read().decode("utf-8", "replace").strip()[-STDERR_TAIL:]
        return f"the embedding process stopped (exit code {code})" + (f": {tail}" if tail else "")

    # -- what the indexer uses ------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """The model's fingerprint, as soon as the child has read its record (before the weights)."""
        if self._spec is None:
            self._spec = self._next()[1]
        return self._spec["fingerprint"]

    def ready(self) -> dict:
        """Wait until the child can take requests; returns what it chose (device, precision, batch size)."""
        self.fingerprint  # noqa: B018 - the spec message comes first
        if self._ready is None:
            self._ready = self._next()[1]
        return self._ready

    @contextlib.contextmanager
    def _request(self, message):
        """Send one request; if the caller leaves before its answer is read whole, the child's
        remaining messages would answer the next request, so the child is ended instead."""
        self.ready()
        if self._busy:
            raise VitsearchError("the embedding process is still busy with an earlier request")
        self._busy = True
        finished = False
        try:
            self._send(message)
            yield
            finished = True
        finally:
            if not finished:
                self.close()
            self._busy = False

    def encode_files(self, paths: Sequence[str], *, batch_size: int | None = None) -> Iterator[FileResult]:
        """Like :meth:`vitsearch.embed.Encoder.encode_files`: one result per path, in order."""
        with self._request(("encode", list(paths), batch_size)):
            while (message := self._next())[0] != "done":
                yield FileResult(*message[1])

    def encode(self, images: Sequence, *, batch_size: int | None = None):
        """Like :meth:`vitsearch.embed.Encoder.encode` of a list: one L2-normalised row per image
        (paths, bytes, PIL images or arrays); a bad image raises :class:`ImageError` naming it."""
        with self._request(("embed", list(images), batch_size)):
            return self._next()[1]

    def close(self) -> None:
        """End the child: at once when it is still loading or mid-request (it holds nothing that
        needs saving; its decode workers die with it), else by asking it to exit."""
        if self._closed:
            return
        self._closed = True
        idle = self._ready is not None and not self._busy
        if idle:
            self._send(("close",))
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        if not idle:
            self._proc.kill()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)
        self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the child ------------------------------------------------------------------------------------
def _child() -> int:
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    follow_parent()
    incoming = sys.stdin.buffer

    def send(message) -> None:
        pickle.dump(message, protocol, protocol=pickle.HIGHEST_PROTOCOL)
        protocol.flush()

    def fail(exc: BaseException) -> None:
        send(("error", type(exc).__name__, str(exc)))

    try:
        options = pickle.load(incoming)
        from .checkpoint import load_spec

        spec = load_spec(options.pop("model"))
        send(("spec", {"fingerprint": spec.fingerprint, "name": spec.name}))
        from .embed import Encoder  # torch: the slow part, now in parallel with the parent

        # Lazy: the first request's decode workers start before the weights load, and decode meanwhile.
        encoder = Encoder(spec, lazy=True, **options)
        send(("ready", {"device": encoder.device, "precision": encoder.precision, "batch_size": encoder.batch_size}))
    except Exception as exc:  # noqa: BLE001 - whatever stops the model is the parent's to report
        fail(exc)
        return 1
    while True:
        try:
            message = pickle.load(incoming)
        except EOFError:
            return 0
        if message[0] not in ("encode", "embed"):  # ("close",)
            return 0
        kind, items, batch_size = message
        try:
            if kind == "embed":
                send(("vectors", encoder.encode(items, batch_size=batch_size)))
                continue
            for res in encoder.encode_files(items, batch_size=batch_size):
                send(("result", (res.index, res.path, res.vector, res.width, res.height, res.error)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            fail(exc)
            continue
        send(("done",))


if __name__ == "__main__":
    try:
        code = _child()
    except BrokenPipeError:  # the parent went away
        code = 1
    sys.stdout.flush()
    os._exit(code)  # no interpreter teardown: the decode workers are gone already
