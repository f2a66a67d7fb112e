"""Files an interrupted modgate leaves in its cache directory, found and removed.

A modgate killed with SIGKILL (or a crash, or a power cut) leaves
  - `spool/fetch-*`: downloads it was receiving or checking (upstream.py), and
  - `artifacts/xx/yy/*.val` that no row of the store refers to: bodies diskcache was
    writing (it inserts the row after the file is whole) or removing (it deletes the
    row first).
Neither counts towards `size_limit`, and `cache verify` never sees them: they are
removed when modgate starts, and counted by `cache verify`.

Several modgate processes may share one cache directory (diskcache allows it), and a
file another one is writing must not go. Each running modgate holds a shared lock on
`CACHE/.modgate.lock` (flock); whoever gets it exclusively is alone and may take every
leftover. Otherwise only files untouched for STALE_AGE count: a live download writes
at least every 60 s (the fetcher's read timeout), and a spooled body waits for its
checks and its copy into the store, each bounded by timeouts far shorter.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STALE_AGE = 3600.0  # seconds
LOCK_NAME = ".modgate.lock"


@dataclass(frozen=True)
class Leftovers:
    files: tuple[Path, ...] = ()
    size: int = 0

    def __str__(self) -> str:
        n = len(self.files)
        return f"{n} file{'' if n == 1 else 's'} ({self.size / (1 << 20):.1f} MiB)"


class CacheLock:
    """A lock on a cache directory: shared while a modgate uses it, exclusive to learn
    that nobody else does. Released by `close` (or when the process ends, however)."""

    def __init__(self, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(cache_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)

    def alone(self) -> bool:
        """Take the lock exclusively if nobody holds it: True when this process is the
        only one using the cache. Call `share` after."""
        if sys.platform == "win32":  # no flock: assume company, touch only old files
            return False
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def share(self) -> None:
        """Hold the lock shared, as every running modgate does (waits while another
        process holds it exclusively: it is cleaning up, briefly)."""
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def find(cache_dir: Path, stored: set[str], alone: bool, now: float | None = None) -> Leftovers:
    """Leftovers under `cache_dir`: spool files, and `.val` files under `artifacts` whose
    path (relative to it, as diskcache's `filename` column has it) is not in `stored`.
    Unless `alone`, only those untouched for STALE_AGE seconds."""
    cutoff = (time.time() if now is None else now) - STALE_AGE
    files, size = [], 0
    artifacts = cache_dir / "artifacts"
    candidates = [p for p in _walk(cache_dir / "spool") if p.name.startswith("fetch-")]
    for path in _walk(artifacts):
        if path.suffix == ".val" and path.relative_to(artifacts).as_posix() not in stored:
            candidates.append(path)
    for path in candidates:
        try:
            st = path.stat()
        except OSError:
            continue  # gone meanwhile
        if alone or st.st_mtime < cutoff:
            files.append(path)
            size += st.st_size
    return Leftovers(tuple(sorted(files)), size)


def remove(leftovers: Leftovers) -> Leftovers:
    """Remove them; what was removed (a file gone meanwhile is not counted)."""
    removed, size = [], 0
    for path in leftovers.files:
        with contextlib.suppress(OSError):
            size += path.stat().st_size
            path.unlink()
            removed.append(path)
    return Leftovers(tuple(removed), size)


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, _, names in os.walk(root):
        found.extend(Path(dirpath, name) for name in names)
    return found
