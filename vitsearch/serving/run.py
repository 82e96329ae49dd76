"""uvicorn, as `vitsearch serve` runs it: bounded connections and timeouts, and a graceful shutdown.

On SIGTERM or SIGINT the server stops accepting connections at once, closes idle keep-alive
connections, lets the requests in flight finish (up to ``shutdown_timeout`` seconds; then they are
cancelled) and returns, so that the caller can flush and close the store and the process can exit 0.
uvicorn itself re-raises the signal once it has shut down, which would end the process with the
signal's status instead; a second SIGINT still forces an immediate stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

from .guards import protocol_with_head_timeout
from .logs import SERVER_LOGGER

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig, frame):
            if self.stopped_by is None:
                self.stopped_by = sig
                logging.getLogger(SERVER_LOGGER).info(
                    "%s: no new connections; finishing %d request(s) in flight (up to %g s)",
                    signal.Signals(sig).name, len(self.server_state.tasks), self.config.timeout_graceful_shutdown)
            super().handle_exit(sig, frame)

    return Server


def run(app, *, host: str, port: int, log_level: str = "info", max_connections: int = 256,
        read_timeout: float = 30.0, shutdown_timeout: float = 30.0) -> int | None:
    """Serve ``app`` until SIGTERM / SIGINT; returns the signal that stopped it.

    Idle keep-alive connections close after 5 s, request heads must arrive within ``read_timeout``,
    and connections beyond ``max_connections`` get 503 at once. Logging is left as it was configured
    (see ``logs.configure``); uvicorn's access log is off.
    """
    import uvicorn

    try:
        http = protocol_with_head_timeout(read_timeout)
    except ImportError:  # pragma: no cover - a uvicorn without its h11 protocol module
        http = "auto"
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=None, access_log=False,
                            timeout_keep_alive=5, limit_concurrency=max_connections, http=http,
                            timeout_graceful_shutdown=shutdown_timeout)
    server = _server_class()(config)
    server.run()
    return server.stopped_by


def exit_past_stuck_threads(grace: float = 2.0, code: int = 0) -> None:
    """End the process now if request threads are still busy after the shutdown (call it once the
    store is flushed and closed).

    A request cut short by ``shutdown_timeout`` has been answered, but its thread may still be waiting,
    e.g. on a download by URL from a host that never answers (up to twice the read timeout). Python
    waits for such threads before it exits, which would outlast a container's stop grace period and
    end in SIGKILL. Idle threads end by themselves within ``grace`` seconds; any still busy then are
    left behind, with a warning, and the process exits with ``code``.
    """
    deadline = time.monotonic() + grace
    busy = []
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            busy.append(thread)
    if not busy:
        return
    logging.getLogger(SERVER_LOGGER).warning(
        "%d request thread(s) still busy after the shutdown (a download by URL?): exiting without them", len(busy))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
