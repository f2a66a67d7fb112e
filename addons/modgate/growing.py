"""A body still being downloaded, readable while it grows: what lets a large zip go to
the client while modgate fetches it, instead of after.

The fetcher appends to a spool file and says how far it got (`wrote`); readers on
other threads open the file and wait for more (`wait`). When the download ends the
gateway checks it and then `settle`s it with the entry it stores (hashes, verdict),
or `fail`s it. A reader sends everything but its last bytes as they arrive and the rest
only once the body is settled and what it read hashes to that SHA-256: a body that
fails its check never reaches a client whole.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO

from modgate.store import Entry


class GrowingFile:
    def __init__(self, path: Path, size: int, source: str = "") -> None:
        """`path` exists and is being written; `size` is the length `source` (the
        upstream's URL) announced."""
        self.path, self.size, self.source = path, size, source
        self._written = 0
        self.entry: Entry | None = None  # set when settled
        self._error: str | None = None
        self.refused = False  # failed a check (hash, zip rules), not cut off: see fail()
        self._changed = threading.Condition()
        self._waiting = 0  # readers inside wait(): wrote() wakes nobody when there are none

    def open(self) -> BinaryIO:
        """A reader's own handle: it keeps the data readable after the spool file is
        removed, so open it before handing the body on."""
        return self.path.open("rb")

    # --- the writer's side (the fetcher, then the gateway) ------------------------------

    def wrote(self, total: int) -> None:
        """Called on the event loop for every piece: no lock unless a reader waits (a
        reader counts itself before it looks at `_written`, so none is missed)."""
        self._written = total
        if self._waiting:
            with self._changed:
                self._changed.notify_all()

    def settle(self, entry: Entry) -> None:
        """The whole body is written and passed every check; readers may finish once what
        they read hashes to `entry.sha256`."""
        with self._changed:
            self.entry = entry
            self._changed.notify_all()

    def fail(self, error: str, *, refused: bool = False) -> None:
        """The download or, `refused`, a check failed: readers stop short of the end."""
        with self._changed:
            if self.entry is None and self._error is None:
                self._error, self.refused = error, refused
            self._changed.notify_all()

    # --- the readers' side --------------------------------------------------------------

    def wait(self, offset: int, timeout: float) -> tuple[int, str | None, str | None]:
        """Wait until more than `offset` bytes are written, the body is settled or failed,
        or `timeout` passes. Returns (bytes written, sha256 if settled, error if failed)."""
        with self._changed:
            self._waiting += 1
            try:
                self._changed.wait_for(
                    lambda: self._written > offset or self.entry or self._error, timeout
                )
            finally:
                self._waiting -= 1
            return self._written, self.entry.sha256 if self.entry else None, self._error

    @property
    def error(self) -> str | None:
        return self._error
