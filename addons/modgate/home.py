"""Where modgate keeps its CA, cache and state: $MODGATE_HOME, or ~/.modgate.

A module of its own so every command can find it without importing mitmproxy.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    return Path(os.environ.get("MODGATE_HOME") or Path.home() / ".modgate")
