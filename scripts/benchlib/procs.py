"""The processes a benchmark run drives: modgate, bare mitmproxy, the peers (Athens and
goproxy, built by scripts/build-peers), go, loadgen, a Go file server.

Every server listens on 127.0.0.1 only and is stopped by the run that started it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

import psutil

from modgate.cli import REVERSE_TARGET
from world import find_go, go_env, shared_gocache
from world.gate import BANNER, GOPROXY_ENDPOINT, free_port
from world.sumdb import TestSumdb

REPO = Path(__file__).resolve().parents[2]
HOST = "proxy.modgate.test"


class Server:
    """A server subprocess whose output goes to a log file; stopped with SIGTERM (a bench
    started in the background hands its children SIGINT ignored)."""

    def __init__(self, name: str, home: Path) -> None:
        self.name, self.home = name, home
        self.log = home / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy_url = self.goproxy_url = ""
        self.bundle = Path()

    def _spawn(
        self, command: list[str], source: Path | None = None, extra: dict[str, str] | None = None
    ) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(extra or {})
        if source is not None:  # another copy of the package, to compare two versions
            env["PYTHONPATH"] = str(source)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=self.home, env=env
            )

    def _wait_for(self, ready: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            found = ready(self.log.read_text(errors="replace"))
            if found:
                return found
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start within {timeout}s:\n{self.output()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_env(self, home: Path, mode: str, **extra: str) -> dict[str, str]:
        """A go environment with a fresh module cache under `home` reaching HOST through
        this server: as an HTTPS proxy ("proxy") or at its GOPROXY endpoint ("goproxy")."""
        if mode == "goproxy":
            return go_env(home, self.goproxy_url, **extra)
        env = go_env(home, f"https://{HOST}", **extra)
        return {**env, "HTTPS_PROXY": self.proxy_url, "SSL_CERT_FILE": str(self.bundle)}


class Modgate(Server):
    """`modgate run` gating https://HOST, fetched from `upstream`, with a fresh cache."""

    def __init__(
        self, home: Path, upstream: str, sumdb: str, args: tuple[str, ...] = (),
        source: Path | None = None,
    ) -> None:  # fmt: skip
        super().__init__("modgate", home)
        self.upstream, self.sumdb, self.args, self.source = upstream, sumdb, args, source
        self.cache_dir = home / "cache"
        self.launcher: tuple[str, ...] = (sys.executable,)  # what runs `-m modgate`

    def start(self) -> Modgate:
        """Start; with no upstream, with no rules file (`--rules ''`): its defaults, which
        route to `go env GOPROXY` and verify against `go env GOSUMDB`."""
        self.home.mkdir(parents=True, exist_ok=True)
        rules = ""
        if self.upstream:
            rules = str(self.home / "rules.yaml")
            Path(rules).write_text(
                f"proxies:\n  - url: https://{HOST}\n    upstream: {self.upstream!r}\n"
                f"checksum:\n  databases: [{self.sumdb!r}]\n"
            )
        confdir = self.home / "confdir"
        self._spawn(
            [*self.launcher, "-m", "modgate", "run", "--listen-port", "0",
             "--goproxy-port", str(free_port()), "--confdir", str(confdir),
             "--cache-dir", str(self.cache_dir), "--rules", rules, *self.args],
            self.source,
        )  # fmt: skip
        match = self._wait_for(BANNER.search)
        self.proxy_url = match.group(1)
        endpoint = GOPROXY_ENDPOINT.search(match.group(0))
        assert endpoint is not None, "modgate started without its GOPROXY endpoint"
        self.goproxy_url = endpoint.group(1)
        self.bundle = confdir / "ca-bundle.pem"
        return self


class Peer(Server):
    """A peer GOPROXY server built from its source (scripts/build-peers), storing under
    `home`/storage, fetching from `upstream` (a GOPROXY value) and verifying what it
    fetches against `gosumdb` (a GOSUMDB value), each in its own documented way.
    Only the GOPROXY mode: it is no HTTPS proxy."""

    kind = ""

    def __init__(self, binary: Path, home: Path, upstream: str, gosumdb: str) -> None:
        super().__init__(self.kind, home)
        self.binary, self.upstream, self.gosumdb = binary, upstream, gosumdb
        self.storage = home / "storage"

    def go_env(self) -> dict[str, str]:
        """What the peer's own go commands and module fetches run with."""
        return {
            "GOPROXY": self.upstream, "GOSUMDB": self.gosumdb, "GONOSUMDB": "",
            "GOPRIVATE": "", "GONOPROXY": "", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod",
            "GOENV": "off", "GOTELEMETRY": "off", "GOINSECURE": "",
        }  # fmt: skip

    def _ready(self, path: str, timeout: float = 60) -> None:
        """Wait until the peer answers HTTP at `path` (any status: it listens)."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.goproxy_url + path, timeout=2).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited {self.proc.returncode}:\n{self.output()[-3000:]}"
                    ) from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer in {timeout}s:\n{self.output()[-3000:]}")

    def start(self) -> Self:
        raise NotImplementedError


class Athens(Peer):
    """Athens (./cmd/proxy), configured by its environment variables only: disk storage,
    its go children (`go mod download` per module) fetching from the upstream and
    verifying against the database (ATHENS_GO_BINARY_ENV_VARS, `;`-separated, which
    replaces its default list whole). Clients here need no /sumdb/ from it: the
    synthetic ones run with GOSUMDB=off, the live ones with a full go.sum."""

    kind = "athens"

    def start(self) -> Athens:
        port = free_port()
        gopath = self.home / "goget"
        gopath.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        env = {
            "ATHENS_PORT": f"127.0.0.1:{port}",
            "ATHENS_STORAGE_TYPE": "disk",
            "ATHENS_DISK_STORAGE_ROOT": str(self.storage),
            "ATHENS_GOGET_DIR": str(gopath),
            "ATHENS_GO_BINARY_ENV_VARS": ";".join(f"{k}={v}" for k, v in self.go_env().items()),
            "ATHENS_NETWORK_MODE": "strict",
            "ATHENS_LOG_LEVEL": "error",
            "ATHENS_SHUTDOWN_TIMEOUT": "2",
            "GO_BINARY_PATH": find_go(),
            "HOME": str(self.home),
            "PATH": os.pathsep.join([str(Path(find_go()).parent), os.environ.get("PATH", "")]),
        }
        self._spawn([str(self.binary)], extra=env)
        self.goproxy_url = f"http://127.0.0.1:{port}"
        self._ready("/healthz")
        return self


class Goproxyd(Peer):
    """goproxy (./cmd/goproxy `server`): a directory cacher; its fetcher reads GOPROXY,
    GOSUMDB and GONOSUMDB from its own environment, fetches from a proxy itself and
    verifies with its own checksum-database client (a go child only for `direct`)."""

    kind = "goproxy"

    def start(self) -> Goproxyd:
        port = free_port()
        temp = self.home / "tmp"
        temp.mkdir(parents=True, exist_ok=True)
        gopath = self.home / "gopath"
        env = {
            **self.go_env(),
            "GOPATH": str(gopath), "GOMODCACHE": str(gopath / "pkg" / "mod"),
            "GOCACHE": str(self.home / "gocache"), "HOME": str(self.home),
        }  # fmt: skip
        self._spawn(
            [str(self.binary), "server", "--address", f"127.0.0.1:{port}",
             "--cacher-dir", str(self.storage), "--temp-dir", str(temp), "--go-bin", find_go(),
             "--shutdown-timeout", "2s"],
            extra=env,
        )  # fmt: skip
        self.goproxy_url = f"http://127.0.0.1:{port}"
        self._ready("/")
        return self


PEERS: dict[str, type[Peer]] = {"goproxy": Goproxyd, "athens": Athens}


def peer_works(kind: str, binary: Path | None) -> str:
    """Why `binary` cannot serve as the peer `kind` here, or "" when it can."""
    if binary is None:
        return f"no --{kind} given (scripts/build-peers builds it)"
    if not os.access(binary, os.X_OK):
        return f"--{kind} {binary}: not an executable file"
    probe = ["--help"] if kind == "goproxy" else ["-version"]
    try:
        done = subprocess.run([str(binary), *probe], capture_output=True, text=True, timeout=30)
    except OSError as e:
        return f"--{kind} {binary}: does not run: {e}"
    except subprocess.TimeoutExpired:
        return f"--{kind} {binary}: `{' '.join(probe)}` did not finish in 30s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"--{kind} {binary}: `{' '.join(probe)}` exited {done.returncode}: {last[:200]}"
    return ""


class SlowSumdb(TestSumdb):
    """The test checksum database, answering after `delay` seconds like a distant one."""

    __test__ = False

    def __init__(self, delay: float) -> None:
        super().__init__("sumdb.modgate.test")
        self.delay = delay

    def respond(self, path: str) -> tuple[str, bytes]:
        time.sleep(self.delay)
        return super().respond(path)


class Bare(Server):
    """bare_addon.py on the mitmproxy modgate runs (same addons, modes and CA): answers
    from memory. With `mitmdump`, in mitmdump instead, with its thirty-odd addons."""

    def __init__(
        self, home: Path, tree: Path, like: Modgate, http2: bool, mitmdump: bool = False
    ) -> None:
        super().__init__("mitmdump" if mitmdump else "bare", home)
        self.tree, self.like, self.http2, self.mitmdump = tree, like, http2, mitmdump

    def start(self) -> Bare:
        port, goport = free_port(), free_port()
        confdir = Path(self.like.bundle).parent  # modgate's CA, so the same bundle works
        addon = str(Path(__file__).with_name("bare_addon.py"))
        h2 = "true" if self.http2 else "false"
        if self.mitmdump:
            self._spawn(
                [str(Path(sys.executable).parent / "mitmdump"), "--listen-host", "127.0.0.1",
                 "--mode", f"regular@{port}", "--mode", f"reverse:{REVERSE_TARGET}@{goport}",
                 "--set", f"confdir={confdir}", "--set", "connection_strategy=lazy",
                 "--set", f"http2={h2}", "--flow-detail", "0", "-s", addon,
                 "--set", f"bench_tree={self.tree}"]
            )  # fmt: skip
        else:
            # -O, as `modgate run` runs (cli._optimised)
            self._spawn([sys.executable, "-O", addon, str(self.tree), str(port), str(goport),
                         str(confdir), h2])  # fmt: skip
        self._wait_for(lambda text: "bare: ready" in text)
        self.proxy_url, self.goproxy_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{goport}"
        self.bundle = self.like.bundle
        return self


class FileServer(Server):
    """Go's net/http file server over a GOPROXY tree (fileserver.go), on plain HTTP: the
    floor of any HTTP server for a warm cache, next to GOPROXY=file://."""

    def __init__(self, home: Path, tree: Path, workdir: Path) -> None:
        super().__init__("fileserver", home)
        self.tree, self.workdir = tree, workdir

    def start(self) -> FileServer:
        port = free_port()
        binary = _go_program("fileserver", self.workdir)
        self._spawn([str(binary), "-port", str(port), "-root", str(self.tree)])
        self._wait_for(lambda text: "fileserver: ready" in text)
        self.goproxy_url = f"http://127.0.0.1:{port}"
        return self


class PeakRss:
    """Samples the resident memory of a process and its children in a thread."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        total = 0
        with contextlib.suppress(psutil.Error):
            for p in [self.process, *self.process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.sample())


def timed_go(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[float, str]:
    """Run go; (seconds, "") on success, (seconds, the error) on failure."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [find_go(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, f"go {' '.join(args)}: timed out after {timeout}s"
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        return elapsed, (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    return elapsed, ""


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def loadgen(workdir: Path) -> Path:
    """The Go load client, built once per source version into `workdir`."""
    return _go_program("loadgen", workdir)


def _go_program(name: str, workdir: Path) -> Path:
    """benchlib/`name`.go, built once per source version into `workdir`."""
    source = Path(__file__).with_name(f"{name}.go").read_bytes()
    target = workdir / f"{name}-{hashlib.sha256(source).hexdigest()[:12]}"
    if target.exists():
        return target
    build = workdir / f"{name}-src"
    remove(build)
    build.mkdir(parents=True)
    (build / "main.go").write_bytes(source)
    (build / "go.mod").write_text("module benchload\n\ngo 1.21\n")
    env = go_env(build, "off")
    env["GOCACHE"] = str(shared_gocache())
    subprocess.run(
        [find_go(), "build", "-o", str(target), "."], env=env, cwd=build, check=True,
        capture_output=True,
    )  # fmt: skip
    remove(build)
    return target


def run_loadgen(binary: Path, *args: str, timeout: float = 120) -> dict[str, Any]:
    done = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        return {"requests": 0, "errors": 1, "rps": 0.0, "first_error": done.stderr.strip()}
    result: dict[str, Any] = json.loads(done.stdout)
    return result
