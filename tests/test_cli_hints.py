"""What modgate tells a user to run, run as they would run it: the banner's command for
go's environment, in a fresh shell, and where `modgate trace --help` says traces are."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modgate.cli import main
from world.gate import Gate, free_port, modgate_command


def test_the_banners_env_command_works_whole_in_a_fresh_shell_without_modgate_on_path(
    tmp_path: Path,
) -> None:
    """On a non-default port with its own confdir: the printed command, pasted into a
    shell that has never heard of modgate's virtualenv, points go at this modgate."""
    port = free_port()
    gate = Gate(tmp_path / "gate", "proxies:\n  - url: https://proxy.modgate.test\n")
    gate.extra_args = ["--listen-port", str(port)]
    with gate:
        assert gate.proxy_url == f"http://127.0.0.1:{port}"
        m = re.search(r'for go: (eval "\$\(.*?\)")', gate.output())
        assert m, gate.output()
        command = m.group(1)
        venv_bin = str(Path(sys.executable).parent)
        path = os.pathsep.join(p for p in ("/usr/bin", "/bin") if p != venv_bin)
        shell = subprocess.run(
            ["/bin/bash", "--norc", "--noprofile", "-c",
             f'{command} && printf "%s\\n%s\\n" "$HTTPS_PROXY" "$SSL_CERT_FILE"'],
            env={"PATH": path, "HOME": str(tmp_path / "home")},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert shell.returncode == 0 and not shell.stderr, shell.stderr
    proxy, bundle = shell.stdout.splitlines()
    assert proxy == f"http://127.0.0.1:{port}"
    assert Path(bundle) == gate.confdir / "ca-bundle.pem"


def _help(*args: str) -> str:
    done = subprocess.run(modgate_command(*args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_trace_help_names_the_database_beside_the_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "elsewhere" / "cache"
    expected = str(tmp_path / "elsewhere" / "trace.db")
    for args in (["trace"], ["trace", "ls"], ["trace", "show"]):
        text = _help(*args, "--cache-dir", str(cache), "--help")
        assert f"the trace database here: {expected}" in text, text
        assert "--cache-dir" in text
    default = _help("trace", "--confdir", str(tmp_path / "c"), "--help")
    assert f"the trace database here: {tmp_path / 'c' / 'trace.db'}" in default


def test_trace_reads_the_database_beside_the_cache_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where `modgate run --cache-dir DIR` writes it (modgate_trace_db's default)."""
    gate = Gate(tmp_path / "gate", "proxies:\n  - url: https://proxy.modgate.test\n",
                cache_dir=tmp_path / "elsewhere" / "cache")  # fmt: skip
    with gate:
        assert main(["trace", "start", "x", "--cache-dir", str(gate.cache_dir)]) == 0
    assert (tmp_path / "elsewhere" / "trace.db").exists()  # where run put it, and start found
    assert main(["trace", "--cache-dir", str(gate.cache_dir), "ls"]) == 0
    assert "x" in capsys.readouterr().out.split()
