"""Local capture (`modgate run --mode local`): mitmproxy's redirector takes the traffic of
chosen programs on this machine (by process name; eBPF and a TUN device) with no proxy
settings and no routing changes. Linux, as root.

Two things stand between mitmproxy 12 and a working capture on many machines, both
measured on this project's (shared/FACTS.md):
  - it starts its redirector through `sudo -n --preserve-env`; where there is no sudo
    (containers, minimal hosts) and modgate is root already, `prepare` puts a `sudo` on
    modgate's PATH that runs the redirector directly;
  - the redirector attaches its eBPF program at /sys/fs/cgroup, which must be the
    cgroup v2 tree; on a mixed layout (v2 mounted at /sys/fs/cgroup/unified) that same
    `sudo` runs it in a private mount namespace with the v2 tree bound there.
When the attach fails mitmproxy keeps running and captures nothing, which for a gate is
fail-open: `probe` checks that a program of a captured name really is captured (its
connection to a closed loopback port is accepted, by the redirector), and `modgate run`
refuses to start otherwise. Capture is machine-wide, and of two capturing instances the
last started takes the traffic silently: `others` finds them to warn.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from modgate.errors import ModgateError

DEFAULT_PROGRAMS = ("go", "git", "git-remote-http")  # git's HTTPS helper: git-remote-https
# The probe program's name, captured along with the others: this process's own, so that
# one modgate's capture never answers another's probe.
PROBE = f"mgprobe{os.getpid()}"[:15]
REDIRECTOR = "mitmproxy-linux-redirector"

SUDO = r"""#!/bin/sh
# Written by modgate (localcapture.py): modgate runs as root, so run what mitmproxy asks
# sudo to run, without sudo's options; with the cgroup v2 tree at /sys/fs/cgroup, where
# the redirector attaches its eBPF program.
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
v2=/sys/fs/cgroup/unified
if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && [ -e $v2/cgroup.controllers ]; then
  exec unshare -m sh -c "mount --bind $v2 /sys/fs/cgroup && exec \"\$@\"" sh "$@"
fi
exec "$@"
"""


def spec(programs: tuple[str, ...]) -> str:
    """The mitmproxy mode for capturing `programs` (and the probe)."""
    for name in programs:
        if not name or any(c in name for c in ",!/ ") or len(name) > 15:
            raise ModgateError(
                f"--capture: {name!r} is not a program name (at most 15 characters, as "
                "the kernel keeps them; no ',', '!', '/' or spaces)"
            )
    return "local:" + ",".join([*programs, PROBE])


def prepare(confdir: Path) -> None:
    """Make mitmproxy's redirector start here: refuse where it cannot, else write the
    `sudo` it asks for when modgate is root (see the module docstring)."""
    if not sys.platform.startswith("linux"):
        return  # macOS and Windows: mitmproxy's own redirectors, its own prompts
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise ModgateError(
                "--mode local needs root (eBPF and a TUN device): run modgate as root"
            )
        return
    tools = confdir / "bin"
    tools.mkdir(parents=True, exist_ok=True)
    sudo = tools / "sudo"
    sudo.write_text(SUDO)
    sudo.chmod(0o700)
    os.environ["PATH"] = f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"


def probe(confdir: Path, timeout: float = 5.0, name: str = PROBE) -> str:
    """Why capture does not work, or "" when a program named PROBE is captured: its
    connection to a closed port on loopback is accepted (by the redirector) rather than
    refused by the kernel."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and closed once this block ends
    program = confdir / "bin" / name
    program.parent.mkdir(parents=True, exist_ok=True)
    if not program.exists():
        program.symlink_to(Path(sys.executable).resolve())
    code = (
        "import socket,sys\n"
        f"s=socket.create_connection(('127.0.0.1',{port}),timeout={timeout})\n"
        "print('captured')"
    )
    try:
        done = subprocess.run([str(program), "-c", code], capture_output=True, text=True,
                              timeout=timeout + 5)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "the probe's connection hung"
    if done.stdout.strip() == "captured":
        return ""
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"a captured program's connection was not captured ({last})"


def others() -> list[int]:
    """Process ids of other running redirectors (other capturing mitmproxies)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if REDIRECTOR.startswith(comm) and comm:
            found.append(int(entry.name))
    return found
