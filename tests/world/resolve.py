"""Made-up host names for a process under test: a sitecustomize.py that resolves them."""

from __future__ import annotations

from pathlib import Path

SITECUSTOMIZE = """
import socket

_getaddrinfo = socket.getaddrinfo
_NAMES = {names!r}


def _resolve(host, port=None, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.lower().rstrip(".") in _NAMES:
        host, to_port = _NAMES[name.lower().rstrip(".")]
        port = to_port or port
    return _getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = _resolve
"""


def resolving(directory: Path, names: dict[str, tuple[str, int | None]]) -> Path:
    """A directory with a sitecustomize.py (for PYTHONPATH) that resolves each name to
    (address, port), the port replacing the one asked for unless None."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE.format(names=names))
    return directory
