"""Single-flight across processes: one lock file per cache key, held (flock) by the one
modgate process fetching that key, so workers sharing a store fetch each answer once.

The gateway's own single-flight (`Gateway._flight`) joins the requests of one process;
this joins the processes. The process that takes a key's lock fetches, checks and
stores; the others wait for the lock, then read the store again and find the answer
there (or, if the holder failed, fetch it themselves). A holder that dies (kill -9)
loses its flock with its last file descriptor, in the kernel: nobody stays wedged.

Waiting polls (LOCK_NB, a few ms apart, on the event loop): a blocking flock would hold
a thread of the default executor per waiter, and the store's writes run there too; two
processes whose executors were full of waiters for each other's keys would deadlock.

Lock files are removed by their holder before it unlocks, so the directory holds only
the keys in flight. The classic race that leaves (another process opened the file just
before it was removed, and locks a file no longer in the directory) is closed by
checking, once locked, that the path still names the locked file; if not, try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

POLL_FIRST, POLL_MAX = 0.002, 0.05  # seconds between attempts, doubling


class Lease:
    """A held lock's right to publish what its holder fetched. A flock is the kernel's
    and cannot be lost while held: always valid. A cluster lock (coordination.py) can
    expire under a holder that stalled; its lease then says so (fencing)."""

    token = 0
    waited = False  # whether another holder had the lock first

    async def valid(self) -> bool:
        return True


class Locks(Protocol):
    def held(self, key: str) -> AbstractAsyncContextManager[object]:
        """Hold `key`'s lock for the block; yields a Lease, or whether it waited."""
        ...


class KeyLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, key: str) -> Path:
        return self.directory / hashlib.sha256(key.encode()).hexdigest()

    @contextlib.asynccontextmanager
    async def held(self, key: str) -> AsyncIterator[bool]:
        """Hold `key`'s lock; yields whether another process held it first (then what it
        fetched is likely in the store: read it again before fetching)."""
        if sys.platform == "win32":  # no flock: single-flight within the process only
            yield False
            return
        import fcntl

        path, wait, waited = self.path(key), POLL_FIRST, False
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                waited = True
                await asyncio.sleep(wait)
                wait = min(wait * 2, POLL_MAX)
                continue
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                break
            os.close(fd)  # removed by its last holder after we opened it: try again
        try:
            yield waited
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)  # unlocks


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
