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

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Process:
    pid: int
    name: str  # /proc/PID/comm: "go", "git-remote-http", ...

    def __str__(self) -> str:
        return f"{self.name}[{self.pid}]"


Address = tuple[str, int]
Connection = tuple[Address, Address]  # (the client's end, modgate's end)


def owner(client: Address, server: Address, proc: Path = PROC) -> Process | None:
    """The process on this machine whose socket is `client`, connected to `server`
    (modgate's end; a redirected connection's socket names the address it was sent to,
    so the client's own address decides when that does not match), or None (not on this
    machine, gone, or not ours to see)."""
    return owners([(client, server)], proc).get((client, server))


def owners(connections: Iterable[Connection], proc: Path = PROC) -> dict[Connection, Process]:
    """The owner of each of `connections` that can be found (as `owner`), in one pass
    over the socket tables and the processes' descriptors for all of them."""
    sockets = _sockets(proc)
    wanted: dict[str, list[Connection]] = {}
    for connection in connections:
        inode = _inode(*connection, sockets)
        if inode is not None:
            wanted.setdefault(f"socket:[{inode}]", []).append(connection)
    found: dict[Connection, Process] = {}
    if not wanted:
        return found
    try:
        # Newest first: a client that just connected most likely just started.
        pids = sorted((int(p.name) for p in proc.iterdir() if p.name.isdigit()), reverse=True)
    except OSError:
        return found
    for pid in pids:
        if pid == os.getpid():
            continue  # modgate's own end of the connection has its own inode anyway
        try:
            for fd in os.scandir(proc / str(pid) / "fd"):
                try:
                    link = os.readlink(fd.path)
                except OSError:
                    continue
                if link in wanted:
                    process = Process(pid, _comm(proc, pid))
                    found.update((c, process) for c in wanted.pop(link))
                    if not wanted:
                        return found
        except OSError:
            continue
    return found


class Lookups:
    """Finds the go commands behind new connections, off the event loop, one pass over
    /proc for every connection that arrived meanwhile. A pass per connection, each in
    its own thread, queued behind one another when 24 go commands opened their
    connections at once: some waited over 2 s (tests/test_e2e_workers.py under load)."""

    def __init__(self, proc: Path = PROC) -> None:
        self.proc = proc
        self._waiting: dict[Connection, list[Future[str]]] = {}
        self._running = False

    def start(self, client: Address, server: Address) -> Future[str]:
        """ "go[PID]" (peers.invocation) for the connection, or "", once found; called on
        the event loop. The future is thread-safe: the trace writer waits on it."""
        future: Future[str] = Future()
        self._waiting.setdefault((client, server), []).append(future)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._passes())
        return future

    async def _passes(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    found = await asyncio.to_thread(self._pass, list(batch))
                except Exception:  # a bug here costs the sessions, not the requests
                    found = {}
                for connection, futures in batch.items():
                    for future in futures:
                        future.set_result(found.get(connection, ""))
        finally:
            self._running = False
            for futures in self._waiting.values():  # the loop is stopping
                for future in futures:
                    future.set_result("")
            self._waiting = {}

    def _pass(self, connections: list[Connection]) -> dict[Connection, str]:
        return {c: str(invocation(p, self.proc)) for c, p in owners(connections, self.proc).items()}


def _comm(proc: Path, pid: int) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


_Socket = tuple[str, int, str, int, str, int]  # local ip, port, remote ip, port, state, inode


def _sockets(proc: Path) -> list[_Socket]:
    """The TCP sockets of /proc/net/tcp and tcp6, addresses as they write them."""
    sockets: list[_Socket] = []
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
            sockets.append((lip, int(lport, 16), rip, int(rport, 16), fields[3], int(fields[9])))
    return sockets


def _inode(client: Address, server: Address, sockets: list[_Socket]) -> int | None:
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
    for lip, lport, rip, rport, state, inode in sockets:
        if (lip, lport, rip, rport) in want:
            return inode or None
        if (lip, lport) in local and state == "01":  # ESTABLISHED
            fallback = fallback or inode or None
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
