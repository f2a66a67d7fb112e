"""The audit writer: the proxy hands it entries, one thread chains them onto the log.

`submit` appends the entry to this process's pending journal (one small `write(2)`: from
then on it survives modgate being killed) and queues it, and returns: no lock, no hash,
no signature on the answer's path. The thread takes what is queued (at most every
`pace` seconds), appends it to the log in one batch (log.py: under the lock every
worker shares), and empties the journal once nothing queued is left unwritten. On start
it replays what the journal holds that the log lacks (an entry's `id` says which): the
batch a killed modgate had not written yet.

Never a silent gap. A batch that cannot be written (disk full, a damaged log) is logged
as an error, counted (`stats`), kept, and tried again every RETRY_WAIT seconds; while it
fails the writer is not `healthy`, and with `modgate_audit_required` the gate refuses
traffic it cannot record (addons/audit.py).
"""

from __future__ import annotations

import logging
import marshal
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modgate.audit import AuditError
from modgate.audit.log import AuditLog, Pending
from modgate.batchthread import STOP, BatchThread
from modgate.trace import journal

log = logging.getLogger("modgate")

PACE = 0.05  # seconds between batches at most once busy
RETRY_WAIT = 1.0
RETRY_MAX = 100_000  # entries kept in memory while writes fail (all are in the journal)
REPLAY_WINDOW = 600.0  # seconds before a journal's oldest entry the log is searched back


@dataclass
class Stats:
    written: int = 0
    failures: int = 0  # batches that could not be written
    dropped: int = 0  # entries given up (past RETRY_MAX, or submitted to a stopped writer)
    recovered: int = 0  # replayed from the journal on start
    torn: int = 0  # torn lines found at the log's end and recorded
    lag: float = 0.0  # seconds the last batch's oldest entry waited to be written
    last_seq: int = 0
    last_error: str = ""


class AuditWriter(BatchThread[Pending]):
    def __init__(
        self,
        path: Path,
        key: Ed25519PrivateKey,
        *,
        pace: float = PACE,
        checkpoint_every: int | None = None,
        on_written: Callable[[Stats], None] | None = None,
    ) -> None:
        super().__init__("modgate-audit", "audit writer")
        self.path, self.key, self.pace = path, key, pace
        self.stats = Stats()
        self._on_written = on_written
        self._checkpoint_every = checkpoint_every
        self._log: AuditLog | None = None
        self._run_id = secrets.token_hex(4)
        self._n = 0
        self._lock = threading.Lock()
        self._journal_fd = -1
        self.journal_path = path.with_name(path.name + ".pending")

    def start(self) -> None:
        """Open the log (an AuditError is raised here, not later), replay the journal,
        write the torn tail a killed writer left (said loudly), start the thread."""
        kwargs = {} if self._checkpoint_every is None else {
            "checkpoint_every": self._checkpoint_every}  # fmt: skip
        self._log = AuditLog(self.path, self.key, **kwargs)
        try:
            _, self.journal_path, self._journal_fd = journal.claim(self.journal_path)
        except OSError as e:
            self._log.close()
            raise AuditError(f"cannot open the audit journal {self.journal_path}: {e}") from e
        pending = _read_journal(self.journal_path)
        if pending:
            written = self._log.recent_ids(min(p.time for p in pending) - REPLAY_WINDOW)
            missing = [p for p in pending if p.id not in written]
            log.warning(
                "modgate: audit: %d entries of a modgate that stopped without writing them "
                "(%s): %d appended now, %d were in the log already", len(pending),
                self.journal_path, len(missing), len(pending) - len(missing),
            )  # fmt: skip
            self.stats.recovered = len(missing)
            os.ftruncate(self._journal_fd, 0)
            for p in missing:
                self._journal(p)
                self._queue.put(p)
        self._start_thread()

    def _closed(self) -> None:
        os.close(self._journal_fd)
        if self._log is not None:
            self._log.close()

    def submit(
        self,
        kind: str,
        fields: dict[str, Any],
        when: float | None = None,
        later: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Journal and queue one entry (on the caller's thread: one small write).
        `later()`: more fields, worked out on the writer's thread."""
        if self._thread is None or not self._thread.is_alive():
            self.stats.dropped += 1
            self.stats.last_error = f"the audit writer for {self.path} is not running"
            log.error("modgate: audit: %s; %s entry lost", self.stats.last_error, kind)
            return
        with self._lock:
            self._n += 1
            p = Pending(time.time() if when is None else when, kind, fields,
                        f"{self._run_id}.{self._n}", later)  # fmt: skip
            try:
                self._journal(p)
            except OSError as e:  # not lost yet: it is queued
                log.error("modgate: cannot append to the audit journal %s: %s",
                          self.journal_path, e)  # fmt: skip
            self._queue.put(p)

    def _journal(self, p: Pending) -> None:
        # marshal, not JSON: a third of the cost on the event loop (~4 us against ~12 for
        # canonical JSON here); the entry's JSON is made on the thread. The journal is
        # this modgate's own 0600 file, read back by the same code.
        data = marshal.dumps((p.time, p.kind, p.fields, p.id))
        os.write(self._journal_fd, b"%d\n%s" % (len(data), data))

    def _run(self) -> None:
        last_batch = time.monotonic()
        while True:
            # At a stop, a checkpoint closes the chain of this run.
            items = self._take(RETRY_WAIT if self._retry else None, last_batch)
            stop = STOP in items
            batch = self._retry + [i for i in items if isinstance(i, Pending)]
            self._retry = []
            if batch or stop:
                self._write(batch, checkpoint=stop)
                last_batch = time.monotonic()
            if stop:
                return

    def _write(self, batch: list[Pending], checkpoint: bool) -> None:
        assert self._log is not None
        batch = [_complete(p) for p in batch]
        try:
            if self._failing and batch:
                # The failed write may have got some lines in (a short write, or the head
                # after the lines): those are not appended twice.
                written = self._log.recent_ids(min(p.time for p in batch) - REPLAY_WINDOW)
                batch = [p for p in batch if p.id not in written]
            done = self._log.append(batch, checkpoint=checkpoint)
        except Exception as e:  # OSError, AuditError, or a bug: the writer goes on
            error = f"cannot write the audit log {self.path}: {e}"
            self.stats.failures += 1
            self.stats.last_error = error
            self._failing = True
            self._retry, lost = batch[-RETRY_MAX:], batch[:-RETRY_MAX]
            self.stats.dropped += len(lost)
            log.error(
                "modgate: %s (%d entries waiting, retried every %.0fs; %d given up)",
                error, len(self._retry), RETRY_WAIT, self.stats.dropped,
            )  # fmt: skip
            return
        self._failing = False
        if done.torn:
            self.stats.torn += 1
            log.error(
                "modgate: audit: the log %s ended in a torn line (a modgate killed while "
                "writing it): %s; the entries it held are appended again from that "
                "process's journal when its slot is next claimed", self.path, done.torn,
            )  # fmt: skip
        self.stats.written += len(batch)
        self.stats.last_seq = done.last
        if batch:
            self.stats.lag = max(0.0, time.time() - min(p.time for p in batch))
        with self._lock:
            if self._queue.empty():
                os.ftruncate(self._journal_fd, 0)
        if self._on_written is not None:
            try:
                self._on_written(self.stats)
            except Exception:  # a metrics callback must not stop the writer
                log.exception("modgate: audit callback failed")


def _complete(p: Pending) -> Pending:
    if p.later is None:
        return p
    try:
        more = p.later()
    except Exception:  # the entry goes without them, never not at all
        log.exception("modgate: audit: completing a %s entry failed", p.kind)
        more = {}
    return Pending(p.time, p.kind, p.fields | more, p.id)


def _read_journal(path: Path) -> list[Pending]:
    """The journal's entries: `<length>\\n<marshal of (time, kind, fields, id)>` each. A
    torn last one (killed mid-write) is skipped: its request was never answered (the
    entry is journalled before the answer goes out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out, at = [], 0
    while at < len(data):
        end = data.find(b"\n", at)
        head = data[at:end] if end >= 0 else b""
        size = int(head) if head.isdigit() else -1
        if size < 0 or end + 1 + size > len(data):
            if end >= 0 and size < 0:  # not a torn tail: something else wrote here
                log.error("modgate: audit: %s: %d bytes at byte %d cannot be read: the "
                          "entries there are lost", path, len(data) - at, at)  # fmt: skip
            break  # else a torn last entry: its answer never went out
        try:
            when, kind, fields, id = marshal.loads(data[end + 1 : end + 1 + size])
            out.append(Pending(float(when), str(kind), dict(fields), str(id)))
        except (ValueError, TypeError, EOFError):
            log.error("modgate: audit: %s: the entry at byte %d cannot be read: lost",
                      path, at)  # fmt: skip
        at = end + 1 + size
    return out
