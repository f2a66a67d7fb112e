"""What `modgate run` does to keep its memory small (issue 13, "Memory").

glibc's malloc gives each thread that allocates its own arena (up to 8 per core), and
memory freed in an arena mostly stays in the process. modgate's threads (the store's
writes through asyncio.to_thread, the BlobServer's transfers, the trace writer, the
fetcher's DNS lookups) each touch megabytes of short-lived buffers, so during a cold
150-module run the resident set grew from 88 to 148 MiB while Python's own heap
(tracemalloc) stayed at about 44 MiB. Two arenas, as MALLOC_ARENA_MAX=2 would give:
110 MiB, for no measurable loss of speed (scripts/bench, issue 13).
"""

from __future__ import annotations

import contextlib
import sys

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def fewer_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; False where there is no
    glibc (musl, macOS: nothing to do). MALLOC_ARENA_MAX in the environment wins."""
    import os

    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return False
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    return False
