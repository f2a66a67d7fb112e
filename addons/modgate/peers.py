"""Which process on this machine opened a connection to modgate (Linux, /proc).

A trace session is meant to be one `go` invocation. For a client on this machine the
kernel knows exactly which process holds the other end of a connection: its socket's
inode is listed in /proc/net/tcp (or tcp6) under the connection's addresses, and in the
process's /proc/PID/fd. So each go command (and each git it starts) is told apart by its
process id, whatever it does with its connections, however many modgate workers serve it,
and two go commands running at once from two shells are two sessions.

Reading another user's /proc/PID/fd needs the same user or root; where it cannot be read
the answer is None, and sessions fall back to the idle-gap rule (trace/sessions.py).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Process:
    pid: int
    name: str  # /proc/PID/comm: "go", "git-remote-http", ...

    def __str__(self) -> str:
        return f"{self.name}[{self.pid}]"


def owner(client: tuple[str, int], server: tuple[str, int], proc: Path = PROC) -> Process | None:
    """The process on this machine whose socket is `client`, connected to `server`
    (modgate's end; a redirected connection's socket names the address it was sent to,
    so the client's own address decides when that does not match), or None (not on this
    machine, gone, or not ours to see)."""
    inode = _inode(client, server, proc)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    try:
        # Newest first: a client that just connected most likely just started.
        pids = sorted((int(p.name) for p in proc.iterdir() if p.name.isdigit()), reverse=True)
    except OSError:
        return None
    for pid in pids:
        if pid == os.getpid():
            continue  # modgate's own end of the connection has its own inode anyway
        fds = proc / str(pid) / "fd"
        try:
            for fd in os.scandir(fds):
                try:
                    if os.readlink(fd.path) == target:
                        return Process(pid, _comm(proc, pid))
                except OSError:
                    continue
        except OSError:
            continue
    return None


def _comm(proc: Path, pid: int) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def _inode(client: tuple[str, int], server: tuple[str, int], proc: Path) -> int | None:
    """The inode of the socket whose local address is `client` and remote `server`."""
    try:
        local_ip = ipaddress.ip_address(client[0])
        remote_ip = ipaddress.ip_address(server[0])
    except ValueError:
        return None
    plain = getattr(local_ip, "ipv4_mapped", None) or local_ip
    if not plain.is_loopback and not is_local(plain):
        return None  # not a client on this machine: no process of ours to find
    want = {(_hex(local_ip), client[1], _hex(remote_ip), server[1])}
    # A v4 client of a dual-stack listener shows as ::ffff:a.b.c.d on one side or both.
    for a in _forms(local_ip):
        for b in _forms(remote_ip):
            want.add((a, client[1], b, server[1]))
    local = {(a, p) for a, p, _, _ in want}
    fallback = None
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            (lip, lport), (rip, rport) = fields[1].split(":"), fields[2].split(":")
            if (lip, int(lport, 16), rip, int(rport, 16)) in want:
                return int(fields[9]) or None
            if (lip, int(lport, 16)) in local and fields[3] == "01":  # ESTABLISHED
                fallback = fallback or int(fields[9]) or None
    return fallback


def _forms(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> set[str]:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        return {_hex(ip)} | ({_hex(mapped)} if mapped else set())
    return {_hex(ip), _hex(ipaddress.IPv6Address(f"::ffff:{ip}"))}


def _hex(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as /proc/net/tcp* writes it: 32-bit words in host byte order."""
    packed = ip.packed
    words = [packed[i : i + 4] for i in range(0, len(packed), 4)]
    little = socket.htonl(1) != 1
    return "".join((w[::-1] if little else w).hex().upper() for w in words)


def is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip` is one of this machine's addresses (a client on it may use any)."""
    try:
        with socket.socket(socket.AF_INET if ip.version == 4 else socket.AF_INET6) as s:
            s.bind((str(ip), 0))
        return True
    except OSError:
        return False


def invocation(process: Process, proc: Path = PROC, programs: tuple[str, ...] = ("go",)) -> Process:
    """The go command `process` belongs to: itself, or the nearest `go` among its
    ancestors (the git a `go get` starts for a direct fetch), else `process`."""
    current, hops = process, 0
    while hops < 8:
        if current.name in programs:
            return current
        try:
            stat = (proc / str(current.pid) / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if parent <= 1:
            break
        current, hops = Process(parent, _comm(proc, parent)), hops + 1
    return process
