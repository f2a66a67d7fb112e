"""Driving a running modgate's admin API as an administrator does: a key made with
`modgate admin keygen`, the API's address from the banner, `modgate admin …` calls and
their envelope, and the dashboard's one-time login link."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from modgate import adminauth
from world.gate import Gate, modgate_command

ADMIN_URL = re.compile(r"admin API (http://[^;\s]+)")


def keygen(confdir: Path, name: str, *scopes: str) -> adminauth.AdminKey:
    args = ["admin", "keygen", name, "--confdir", str(confdir)]
    for scope in scopes:
        args += ["--scope", scope]
    done = subprocess.run(modgate_command(*args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return adminauth.client_key((confdir / "admin" / f"{name}.key").read_text(), name)


def admin_url(gate: Gate) -> str:
    m = ADMIN_URL.search(gate.output())
    assert m, gate.output()
    return m.group(1)


def admin(gate: Gate, *args: str, key: str = "ops") -> subprocess.CompletedProcess[str]:
    keyfile = gate.confdir / "admin" / f"{key}.key"
    command = modgate_command("admin", *args[:-1] if args[-1] == "--" else args)
    # The options go after the action: `modgate admin cache stats --url ... --json`.
    command += ["--url", admin_url(gate), "--key-file", str(keyfile), "--json"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def envelope(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(done.stdout)
    assert set(answer) == {"code", "message", "data"}, answer
    return answer


def login_link(gate: Gate, key: str = "ops") -> str:
    """What `modgate admin dashboard` prints: a link that logs a browser in, once."""
    done = subprocess.run(
        modgate_command("admin", "dashboard", "--url", admin_url(gate), "--key-file",
                        str(gate.confdir / "admin" / f"{key}.key")),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
