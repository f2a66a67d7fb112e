"""The go command's settings as it resolves them (`go env -json`: the environment, the
go.env file, the built-in defaults), for the commands that act on a client's behalf
(`modgate doctor`, `prefetch`, `cache import`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable

from modgate.errors import ModgateError


class GoEnvError(ModgateError):
    """No go command, or `go env` failed; `missing` says which."""

    def __init__(self, message: str, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


def read(names: Iterable[str] = ()) -> dict[str, str]:
    """`go env -json NAMES` (every setting when none is named)."""
    go = shutil.which("go")
    if go is None:
        raise GoEnvError("no go command on PATH", missing=True)
    done = subprocess.run([go, "env", "-json", *names], capture_output=True, text=True,
                          check=False)  # fmt: skip
    try:
        values = json.loads(done.stdout)
    except ValueError:
        values = None
    if done.returncode != 0 or not isinstance(values, dict):
        why = " ".join(done.stderr.split())[:300] or f"exit status {done.returncode}"
        raise GoEnvError(f"`go env` failed: {why}", missing=False)
    return {k: str(v) for k, v in values.items()}


def values(names: Iterable[str]) -> dict[str, str]:
    """`read`, or nothing when go cannot say (the caller's defaults then apply)."""
    try:
        return read(names)
    except GoEnvError:
        return {}
