"""One modgate per core: `modgate run --workers N` starts N worker processes that each run
the whole gate (mitmproxy master, GOPROXY endpoint) on the same listening ports, and
this process watches over them (the supervisor). It imports no mitmproxy.

    supervisor                         worker i (`modgate run ... --workers 1`, with
      claims the ports (PortClaim)       MODGATE_WORKER=i:FD in its environment)
      starts worker 0, then the rest     listens with SO_REUSEPORT (ReusePortLoop)
      prints the banner once             says "ready <banner>" on FD, once listening
      restarts a worker that dies        stops when FD reads end-of-file: the
        (1 s, 2 s ... 30 s backoff)        supervisor is gone, however it ended
      SIGINT/SIGTERM: tells every
        worker to stop, waits for them

Sharing a port. Each worker binds its own listening socket with SO_REUSEPORT, and the
kernel (Linux) spreads new connections across them by a hash of the connection's
addresses, each worker with its own accept queue. mitmproxy 12 opens its listeners with
`asyncio.start_server(handler, host, port)` (mitmproxy/proxy/mode_servers.py,
AsyncioServerInstance.listen) and has no option for it, and its server classes are
registered one per mode (a subclass cannot take a mode's place); so a worker runs on an
event loop whose `create_server` defaults to `reuse_port=True`: asyncio's own, public
parameter, and every listener a worker opens (mitmproxy's, and a lean endpoint's if it
uses asyncio) shares its port without knowing it.

Claiming the ports. SO_REUSEPORT would let a second modgate of the same user join the
first one's ports silently, each taking part of the other's traffic. So the supervisor
first takes a lock named after each port: an abstract Unix socket
(`@modgate/listen/PORT`), machine-wide (per network namespace, as ports are), whatever
the confdir and cache directory, and released by the kernel when the supervisor dies
however it dies. It then binds (without listening) a SO_REUSEPORT socket on each port: a
port held by anything that did not set SO_REUSEPORT (another program, a modgate with
one worker) fails here with the clear error, once; port 0 becomes a real port that
every worker then uses; and the port stays this modgate's while a worker restarts. A
bound socket that does not listen receives no connections.

Linux only: other systems' SO_REUSEPORT does not spread connections (BSD, macOS give
them all to the last socket bound); there the default is one worker.

What workers share, and how, is said where it is done: one store (diskcache, several
processes by design; leftovers.py's lock), one single-flight (keylock.py), one trace
database (each writer its own journal: trace/journal.py), one rules file (each worker
watches and reloads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modgate.errors import ModgateError

WORKER_ENV = "MODGATE_WORKER"  # "INDEX:FD" in a worker's environment
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multi-process mode
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # seconds before a dead worker starts again
STEADY = 60.0  # a worker that ran this long before dying starts again at BACKOFF_FIRST
STOP_GRACE = 30.0  # seconds workers have to drain after SIGTERM, then SIGKILL


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as taskset sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return 1


def default_workers() -> int:
    return usable_cores() if sys.platform == "linux" else 1


# --- the worker's side ---------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    """This process as a worker: its index (0..N-1) and its line to the supervisor."""

    index: int
    fd: int

    def ready(self, banner: str) -> None:
        """Tell the supervisor this worker listens; `banner` is what it would print."""
        os.write(self.fd, f"ready {banner}\n".encode())

    def watch(self, gone: Callable[[], None]) -> None:
        """Call `gone` (on the running event loop) when the supervisor has ended."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.fd)
                gone()

        os.set_blocking(self.fd, False)
        loop.add_reader(self.fd, readable)


def this_worker() -> Worker | None:
    """This process's Worker when a supervisor started it, else None."""
    value = os.environ.get(WORKER_ENV, "")
    index, _, fd = value.partition(":")
    if not (index.isdigit() and fd.isdigit()):
        return None
    return Worker(int(index), int(fd))


class ReusePortLoop(asyncio.SelectorEventLoop):
    """An event loop whose servers share their port with the other workers' (see above)."""

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("reuse_port") is None:
            kwargs["reuse_port"] = True
        return await super().create_server(*args, **kwargs)


# --- the supervisor's side -----------------------------------------------------------


class PortClaim:
    """The ports of one multi-worker modgate, claimed for as long as it runs (see above)."""

    def __init__(self, host: str, ports: list[int]) -> None:
        self.host = host
        self.ports: list[int] = []
        self._held: list[socket.socket] = []
        try:
            for port in ports:
                self.ports.append(self._claim(port))
        except BaseException:
            self.close()
            raise

    def _claim(self, port: int) -> int:
        where = f"{self.host or '*'}:{port}"
        family, address = _bind_address(self.host, port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        self._held.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError as e:
            reason = e.strerror or str(e)
            raise ModgateError(f"cannot listen on {where}: {reason[:1].lower()}{reason[1:]}") from e
        port = int(sock.getsockname()[1])
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._held.append(lock)
        try:
            lock.bind(f"\0modgate/listen/{port}")
        except OSError as e:
            raise ModgateError(
                f"cannot listen on {where}: another modgate with several workers listens "
                f"on port {port} (a lock only one modgate per port may hold: "
                f"@modgate/listen/{port}); stop it or choose another port"
            ) from e
        return port

    def close(self) -> None:
        for sock in self._held:
            sock.close()
        self._held = []


def _bind_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return family, address


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    channel: socket.socket | None = None
    buffer: bytes = b""
    ready: bool = False
    started: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None
    banner: str = ""
    lives: int = 0


@dataclass
class Supervisor:
    """Starts `workers` copies of `command` (`modgate run ...` with the claimed ports and
    one worker each), keeps them running, and stops them."""

    command: list[str]
    workers: int
    log: Callable[[str], None] = field(default=lambda line: _say(line))
    multiproc: Path | None = None  # the workers' metrics files (PROMETHEUS_MULTIPROC_DIR)
    _slots: list[_Slot] = field(default_factory=list)
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _stopping: int = 0  # signals received

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        self._selector.register(wake_r, selectors.EVENT_READ, None)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            return self._supervise()
        finally:
            self._stop_all()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()
            os.close(wake_r)
            os.close(wake_w)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping += 1

    def _supervise(self) -> int:
        self._slots = [_Slot(i) for i in range(self.workers)]
        # Worker 0 alone first: an error every worker would meet (an option, the CA, the
        # cache directory) is printed once, and it cleans up what a killed run left.
        self._start(self._slots[0])
        if (code := self._until(lambda: self._slots[0].ready)) is not None:
            return code
        for slot in self._slots[1:]:
            self._start(slot)
        if (code := self._until(lambda: all(s.ready for s in self._slots))) is not None:
            return code
        print(f"{self._slots[0].banner}; {self.workers} workers", flush=True)
        self._until(lambda: False)
        return 0

    def _until(self, done: Callable[[], bool]) -> int | None:
        """Serve events until `done()`: None then; the exit code if modgate must stop."""
        starting = not all(s.lives for s in self._slots) or not all(s.ready for s in self._slots)
        while not done():
            if self._stopping:
                return 0
            timeout = self._next_restart()
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        os.read(key.fd, 512)  # a signal woke us: seen in _stopping
                else:
                    self._read(key.data)
            for slot in self._slots:
                if (code := self._reap(slot, starting)) is not None:
                    return code
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    self._start(slot)
        return None

    def _next_restart(self) -> float:
        times = [s.restart_at for s in self._slots if s.restart_at is not None]
        return max(0.0, min(times) - time.monotonic()) if times else 0.25

    def _start(self, slot: _Slot) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, WORKER_ENV: f"{slot.index}:{theirs.fileno()}"}
        slot.proc = subprocess.Popen(self.command, env=env, pass_fds=(theirs.fileno(),))
        theirs.close()
        ours.setblocking(False)
        slot.channel, slot.buffer, slot.ready = ours, b"", False
        slot.started, slot.restart_at = time.monotonic(), None
        slot.lives += 1
        self._selector.register(ours, selectors.EVENT_READ, slot)

    def _read(self, slot: _Slot) -> None:
        assert slot.channel is not None
        try:
            data = slot.channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(slot.channel)
            slot.channel.close()
            slot.channel = None
            return
        slot.buffer += data
        while b"\n" in slot.buffer:
            line, _, slot.buffer = slot.buffer.partition(b"\n")
            kind, _, rest = line.decode(errors="replace").partition(" ")
            if kind == "ready":
                slot.ready, slot.banner = True, rest
                if slot.lives > 1:
                    pid = slot.proc.pid if slot.proc else "?"
                    self.log(f"modgate: worker {slot.index} is serving again (pid {pid})")

    def _reap(self, slot: _Slot, starting: bool) -> int | None:
        proc = slot.proc
        if proc is None or (code := proc.poll()) is None:
            return None
        slot.proc = None
        if self.multiproc is not None:
            dead_worker_files(self.multiproc, proc.pid)
        if slot.channel is not None:
            self._selector.unregister(slot.channel)
            slot.channel.close()
            slot.channel = None
        if self._stopping:
            return None
        if starting and not slot.ready:
            # It could not start (its error is printed): the others would not either.
            return code if code > 0 else 1
        if time.monotonic() - slot.started >= STEADY:
            slot.backoff = BACKOFF_FIRST
        self.log(
            f"modgate: worker {slot.index} (pid {proc.pid}) {_how(code)}; starting it "
            f"again in {slot.backoff:.0f}s"
        )
        slot.ready = False
        slot.restart_at = time.monotonic() + slot.backoff
        slot.backoff = min(slot.backoff * 2, BACKOFF_MAX)
        return None

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains: fetches in flight stored, trace written),
        then wait; SIGKILL what is left after STOP_GRACE or a second signal."""
        procs = [s.proc for s in self._slots if s.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        first = self._stopping
        deadline = time.monotonic() + STOP_GRACE
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or self._stopping > max(first, 1):
                for proc in procs:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                break
            with contextlib.suppress(InterruptedError):
                time.sleep(0.05)
        for proc in procs:
            proc.wait()
        for slot in self._slots:
            if slot.channel is not None:
                slot.channel.close()
                slot.channel = None


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _how(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


def supervise(
    argv: list[str],
    workers: int,
    listen_host: str,
    ports: list[int],
    metrics: tuple[str, int] | None = None,
    multiproc: Path | None = None,
) -> int:
    """Run `modgate ARGV` (a `run` command line) as `workers` workers on `ports` (the
    proxy's, then the endpoint's if any; 0 for any free one), and `metrics` (host, port)
    if given, its values shared through the directory `multiproc`. This process becomes
    the supervisor: a fresh interpreter that loads this module alone (`main`), 21 MiB
    resident where `modgate run`'s imports took 50, for a process that only waits."""
    if sys.platform != "linux":
        raise ModgateError("--workers above 1 needs Linux (SO_REUSEPORT spreading connections)")
    plan = {"argv": argv, "workers": workers, "host": listen_host, "ports": ports,
            "metrics": metrics, "multiproc": str(multiproc) if multiproc else None}  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [*_python(), "-m", "modgate.workers", json.dumps(plan)])


def _python() -> list[str]:
    return [sys.executable, *(["-O"] if sys.flags.optimize else [])]


def main(args: list[str] | None = None) -> int:
    """`python -m modgate.workers PLAN`: the supervisor `supervise` starts."""
    plan = json.loads((sys.argv[1:] if args is None else args)[0])
    claims: list[PortClaim] = []
    try:
        claims.append(claim := PortClaim(plan["host"], plan["ports"]))
        if metrics := plan.get("metrics"):
            claims.append(metrics_claim := PortClaim(metrics[0], [metrics[1]]))
    except ModgateError as e:
        for c in claims:
            c.close()
        print(f"modgate: {e}", file=sys.stderr)
        return 2
    try:
        fixed = ["--listen-port", str(claim.ports[0]), "--workers", "1"]
        if len(claim.ports) > 1:
            fixed += ["--goproxy-port", str(claim.ports[1])]
        if metrics:
            host = f"[{metrics[0]}]" if ":" in metrics[0] else metrics[0]
            fixed += ["--metrics-listen", f"{host}:{metrics_claim.ports[0]}"]
        multiproc = Path(plan["multiproc"]) if plan.get("multiproc") else None
        if multiproc is not None:
            _fresh_directory(multiproc)
            os.environ[MULTIPROC_ENV] = str(multiproc)  # the workers inherit it
        command = [*_python(), "-m", "modgate", *plan["argv"], *fixed]
        return Supervisor(command, int(plan["workers"]), multiproc=multiproc).run()
    finally:
        for c in claims:
            c.close()


def _fresh_directory(path: Path) -> None:
    """`path`, empty: the metrics files of an earlier run would add to this one's."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)


def dead_worker_files(multiproc: Path, pid: int) -> None:
    """A dead worker's live gauges leave the sums (its counters stay: they only grow).
    What prometheus_client.multiprocess.mark_process_dead does, without importing it into
    the supervisor."""
    for path in multiproc.glob(f"gauge_live*_{pid}.db"):
        with contextlib.suppress(OSError):
            path.unlink()


if __name__ == "__main__":
    sys.exit(main())
