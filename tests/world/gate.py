"""A real `modgate run` process for end-to-end tests, driven as a user drives it."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BANNER = re.compile(r"modgate: (?:proxy on (http://[^,\s]+)|capturing [^(]+\(local mode\)),.*")
GOPROXY_ENDPOINT = re.compile(r"GOPROXY endpoint (https?://[^;\s]+);")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def modgate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "modgate", *args]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Gate:
    """`modgate run` in a subprocess with its own confdir, cache and rules file.

    The upstreams in `rules` are real servers on 127.0.0.1; clients reach them under
    made-up host names that only modgate knows, as Go never proxies loopback hosts.
    `rules=None` starts it with no rules file at all, as a new user would. `wrapper`
    is a command line that runs modgate's (e.g. in a network namespace). `workers` > 1
    starts a supervisor and that many workers (`worker_pids`).
    """

    def __init__(
        self, home: Path, rules: str | None, *, cache_dir: Path | None = None, workers: int = 1
    ) -> None:
        self.home = home
        self.confdir = home / "confdir"
        self.cache_dir = cache_dir or home / "cache"
        self.rules = home / "rules.yaml"
        self.log = home / "modgate.log"
        self.rules_text = rules
        self.workers = workers  # --workers: 1, a single process, unless a test says more
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []
        self.wrapper: list[str] = []
        self.ignore_sigint = False  # as a shell does for `modgate run &`
        self.env: dict[str, str] = {}  # added to modgate's environment
        self.proxy_url = self.goproxy_url = ""

    def start(self, timeout: float = 60) -> Gate:
        self.home.mkdir(parents=True, exist_ok=True)
        rules = []
        if self.rules_text is not None:
            self.rules.write_text(self.rules_text)
            rules = ["--rules", str(self.rules)]
        self.log.write_bytes(b"")
        args = ["run", "--listen-port", "0", "--goproxy-port", str(free_port()),
                "--confdir", str(self.confdir), "--cache-dir", str(self.cache_dir),
                "--workers", str(self.workers), *rules, *self.extra_args]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.wrapper, *modgate_command(*args)], stdout=out, stderr=subprocess.STDOUT,
                cwd=self.home,
                env={**{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
                     **self.env},
                preexec_fn=_ignore_sigint if self.ignore_sigint else None,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = BANNER.search(self.log.read_text(errors="replace"))
            if m:
                self.proxy_url = m.group(1) or ""
                endpoint = GOPROXY_ENDPOINT.search(m.group(0))
                self.goproxy_url = endpoint.group(1) if endpoint else ""
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"modgate exited {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"modgate did not start within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Gate:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 15) -> None:
        """Wait until modgate's log says `text` (live lines go out in batches, a little
        after their request)."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in modgate's log:\n{self.output()}")
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """The worker processes of a `workers` > 1 modgate (the supervisor's children)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def traced(
        self, where: str, params: tuple[object, ...], until: Callable[[list[sqlite3.Row]], bool],
        timeout: float = 15,
    ) -> list[sqlite3.Row]:  # fmt: skip
        """Trace records `WHERE <where>`, once `until` holds of them (the writer commits a
        little after each request) or `timeout` has passed."""
        deadline = time.monotonic() + timeout
        while True:
            db = sqlite3.connect(self.cache_dir.parent / "trace.db")
            db.row_factory = sqlite3.Row
            try:
                rows = db.execute(f"SELECT * FROM requests WHERE {where}", params).fetchall()
            except sqlite3.OperationalError:  # not created yet
                rows = []
            finally:
                db.close()
            if until(rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)

    @property
    def bundle(self) -> Path:
        return self.confdir / "ca-bundle.pem"

    def client_env(self, env: dict[str, str], mode: str = "proxy") -> dict[str, str]:
        """`env` for a go command that reaches its GOPROXY through modgate: as an HTTPS
        proxy trusting modgate's CA ("proxy"), or at the GOPROXY endpoint ("goproxy")."""
        if mode == "goproxy":
            assert self.goproxy_url, "this modgate has no GOPROXY endpoint"
            return {**env, "GOPROXY": self.goproxy_url}
        return {**env, "HTTPS_PROXY": self.proxy_url, "SSL_CERT_FILE": str(self.bundle)}
