"""The thread both journalled writers run (trace/writer.py into SQLite, audit/writer.py
into the hash-chained log): the event loop journals and queues an item, and one thread
writes them in batches, at most one batch per `pace` seconds once busy; a batch that
fails is kept (`_retry`) and tried again; `stop()` writes what is queued and closes.

A subclass sets `pace`, implements `_run` (taking batches with `_take`) and `_closed`
(what to close once its thread has finished).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

log = logging.getLogger("modgate")

STOP = object()  # queued by stop(): write what is queued, then end


class BatchThread[T]:
    pace: float

    def __init__(self, name: str, what: str) -> None:
        self._name, self._what = name, what
        self._queue: queue.SimpleQueue[T | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._retry: list[T] = []
        self._failing = False

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then close (what `_closed` closes)."""
        if self._thread is None:
            return
        self._queue.put(STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("modgate: %s did not finish within %.0fs", self._what, timeout)
        else:
            self._closed()
        self._thread = None

    @property
    def healthy(self) -> bool:
        """Running, and the last batch was written."""
        return self._thread is not None and self._thread.is_alive() and not self._failing

    @property
    def waiting(self) -> int:
        """Items kept for another try after a batch failed."""
        return len(self._retry)

    def _take(self, wait: float | None, since: float, most: int | None = None) -> list[object]:
        """The next batch: its first item, waited for up to `wait` seconds (None: for
        ever; [] when none came); then, once `pace` has passed since `since` (the last
        batch's time.monotonic()), whatever else is queued, up to `most` items."""
        try:
            items = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return []
        if items[0] is not STOP:
            time.sleep(max(0.0, since + self.pace - time.monotonic()))
        while most is None or len(items) < most:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        raise NotImplementedError

    def _closed(self) -> None:
        """Close what the thread wrote to, once it has finished."""
