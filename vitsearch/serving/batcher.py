"""The micro-batcher: concurrent requests meet on one worker thread and share its model and store calls."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = object()


class MicroBatcher:
    """Calls ``fn(items)`` on a worker thread with the items that ``submit`` received from any thread.

    A batch holds the first waiting item and whatever else arrives within ``max_wait`` seconds, up to
    ``max_batch``. ``fn`` returns one result per item; a result that is an exception is raised to that
    item's caller only. With ``max_batch=1`` every item runs on its own (the baseline of the benchmark).
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 32, max_wait: float = 0.002):
        self.fn, self.max_batch, self.max_wait = fn, max(1, max_batch), max(0.0, max_wait)
        self.queue: queue.Queue = queue.Queue()
        self.batches = self.items = 0
        self.thread = threading.Thread(target=self._loop, name="vitsearch-batcher", daemon=True)
        self.thread.start()

    def submit(self, item) -> Any:
        future: Future = Future()
        self.queue.put((item, future))
        return future.result()

    def close(self) -> None:
        self.queue.put(_STOP)
        self.thread.join(timeout=10)

    def _gather(self) -> tuple[list, bool]:
        first = self.queue.get()
        if first is _STOP:
            return [], True
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                left = deadline - time.monotonic()
                item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._gather()
            if not batch:
                continue
            self.batches, self.items = self.batches + 1, self.items + len(batch)
            try:
                results = self.fn([item for item, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of this batch
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
