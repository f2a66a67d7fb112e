"""The ways modgate is installed besides scripts/setup: `pipx install .`, the container
image definition and the systemd unit in scripts/. Built and run where this machine
allows; otherwise checked as files (and the test says which)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTAINERFILE = REPO / "scripts" / "Containerfile"
UNIT = REPO / "scripts" / "modgate.service"


def _instructions() -> list[tuple[str, str]]:
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^([A-Za-z]+)\s+(.*)$", text, re.M)]  # fmt: skip


def test_the_container_image_installs_this_tree_and_runs_modgate() -> None:
    steps = _instructions()
    assert steps[0][0] == "FROM"
    for kind, arg in steps:
        if kind == "COPY":
            *sources, _ = arg.split()
            assert all((REPO / s).exists() for s in sources), arg
    entry = json.loads(dict(steps)["ENTRYPOINT"]) + json.loads(dict(steps)["CMD"])
    assert entry[:2] == ["modgate", "run"]
    # Every flag the image passes is one `modgate run` takes (its parser rejects others).
    from modgate.cli import _parser

    args = _parser().parse_args(entry[1:])
    assert args.listen_host == "0.0.0.0" and str(args.rules) == "/etc/modgate/rules.yaml"


def _docker_works() -> str:
    tool = shutil.which("podman") or shutil.which("docker")
    if tool is None:
        return ""
    done = subprocess.run([tool, "info"], capture_output=True, timeout=30)
    return tool if done.returncode == 0 else ""


@pytest.mark.skipif(not _docker_works(), reason="no working docker or podman here: the "
                    "Containerfile is checked as a file only")  # fmt: skip
def test_the_image_builds() -> None:
    tool = _docker_works()
    done = subprocess.run([tool, "build", "-f", str(CONTAINERFILE), "-t", "modgate-test", str(REPO)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    # systemd-analyze checks ExecStart's program exists: point it at this tree's modgate.
    modgate = Path(sys.executable).with_name("modgate")
    unit = tmp_path / "modgate.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/modgate", str(modgate)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr  # e.g. "Unknown key"
    assert "--rules /etc/modgate/rules.yaml" in UNIT.read_text()


def _pypi() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pipx/", timeout=10).close()
    except OSError:
        return False
    return True


@pytest.mark.e2e
@pytest.mark.skipif(not _pypi(), reason="PyPI is not reachable: pipx cannot be installed")
def test_pipx_install_gives_a_working_modgate(tmp_path: Path) -> None:
    venv = tmp_path / "pipx-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "pipx"], check=True, timeout=300)
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
    done = subprocess.run([venv / "bin" / "pipx", "install", "--python", sys.executable, str(REPO)],
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    version = subprocess.run([tmp_path / "bin" / "modgate", "--version"], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert version.stdout.startswith("modgate "), version.stderr
    helped = subprocess.run([tmp_path / "bin" / "modgate", "run", "--help"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert "--workers" in helped.stdout or "--mode" in helped.stdout
