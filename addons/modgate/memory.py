"""What `modgate run` does to keep its memory small (issue 13, "Memory").

glibc's malloc gives each thread that allocates its own arena (up to 8 per core), and
memory freed in an arena mostly stays in the process. modgate's threads (the store's
writes through asyncio.to_thread, the BlobServer's transfers, the trace writer, the
fetcher's DNS lookups) each touch megabytes of short-lived buffers, so during a cold
150-module run the resident set grew from 88 to 148 MiB while Python's own heap
(tracemalloc) stayed at about 44 MiB. Two arenas, as MALLOC_ARENA_MAX=2 would give:
110 MiB, for no measurable loss of speed (scripts/bench, issue 13).

And blocks of a body's size (up to MEMORY_MAX, 1 MiB, answered from memory) are
mapped and unmapped on their own rather than carved from the heap: glibc raises its
mmap threshold to the largest block freed so far, after which such blocks stay in the
heap and fragment it. A fixed threshold of 256 KiB, and trimming the heap's top past
1 MiB: 106 MiB.
"""

from __future__ import annotations

import contextlib
import sys

# glibc's mallopt parameters (malloc.h), each unless its environment variable is set
_SETTINGS = (
    (-8, 2, "MALLOC_ARENA_MAX"),  # M_ARENA_MAX
    (-3, 256 << 10, "MALLOC_MMAP_THRESHOLD_"),  # M_MMAP_THRESHOLD
    (-1, 1 << 20, "MALLOC_TRIM_THRESHOLD_"),  # M_TRIM_THRESHOLD
)


def lean_malloc() -> bool:
    """Set glibc's malloc as said above, for what is allocated from now on (call it before
    any thread starts); False where there is no glibc (musl, macOS: nothing to do)."""
    import os

    if sys.platform != "linux":
        return False
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        return all(
            libc.mallopt(param, value) == 1
            for param, value, env in _SETTINGS
            if env not in os.environ
        )
    return False


def without_mitmproxy_addon_index() -> None:
    """Let mitmproxy's addons be imported one by one without `mitmproxy/addons/__init__.py`,
    which imports all thirty-odd of them to list them (`default_addons`, for mitmdump):
    flask, werkzeug, jinja2 and asgiref for its onboarding site among them, 7 MiB of a
    worker's memory that `modgate run`'s lean master never uses. The package is made
    without running its index; its modules load as usual. Only for `modgate run`'s own
    process, before anything imports mitmproxy.addons: mitmdump's `default_addons` is
    then missing from it."""
    if "mitmproxy.addons" in sys.modules:
        return
    import importlib.util

    import mitmproxy

    spec = importlib.util.find_spec("mitmproxy.addons")
    if spec is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)  # its __path__, none of its code
    sys.modules["mitmproxy.addons"] = package
    mitmproxy.addons = package  # type: ignore[attr-defined]
