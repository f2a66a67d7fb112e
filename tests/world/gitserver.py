"""A real git server for go's `direct` fetches: `git http-backend` (smart HTTP) behind a
small HTTPS server on 127.0.0.1 with its own certificate, which also answers go's
`?go-get=1` discovery with a go-import meta tag. Repositories are made from a few lines
of test code (`add`: a module with one tagged version). Counts what it was asked.

Its host name is made up: processes that must reach it resolve it through a
sitecustomize (world.resolve), as go never sends loopback names through HTTPS_PROXY."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from world.certs import self_signed


def git(*args: str, cwd: Path) -> None:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "-c", "user.name=modgate", "-c", "user.email=test@modgate.test",
                    "-c", "init.defaultBranch=main", *args],
                   cwd=cwd, env=env, check=True, capture_output=True, timeout=60)  # fmt: skip


class GitServer:
    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        self.root = workdir / "repos"
        self.root.mkdir(parents=True)
        self.requests: list[str] = []
        self._lock = threading.Lock()
        context, _ = self_signed(workdir, name, x509.DNSName(name))
        self.cert = workdir / f"{name}.pem"
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._serve(self)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()  # fmt: skip

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def add(self, repo: str, version: str = "v1.0.0") -> str:
        """A repository `repo` (a path below the host) holding module name/repo at
        `version`; the module path."""
        module = f"{self.name}/{repo}"
        bare = self.root / f"{repo}.git"
        bare.mkdir(parents=True)
        git("init", "--bare", "-q", ".", cwd=bare)
        work = self.root.parent / "work" / repo
        work.mkdir(parents=True)
        (work / "go.mod").write_text(f"module {module}\n\ngo 1.21\n")
        (work / "lib.go").write_text(
            f"package {repo.rsplit('/', 1)[-1]}\n\nconst Name = {module!r}\n".replace("'", '"')
        )
        git("init", "-q", ".", cwd=work)
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", "first", cwd=work)
        git("tag", version, cwd=work)
        git("push", "-q", str(bare), "main", version, cwd=work)
        return module

    def asked(self, fragment: str) -> int:
        with self._lock:
            return sum(fragment in r for r in self.requests)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append(f"{h.command} {h.path}")
        parts = urlsplit(h.path)
        if "go-get=1" in parts.query:
            module = f"{self.name}{parts.path.rstrip('/')}"
            body = (f'<html><head><meta name="go-import" content="{module} git '
                    f'https://{self.name}{parts.path.rstrip("/")}.git"></head></html>\n').encode()  # fmt: skip
            self._answer(h, 200, {"Content-Type": "text/html"}, body)
            return
        length = int(h.headers.get("Content-Length") or 0)
        data = h.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", ""), "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": h.command, "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query, "CONTENT_TYPE": h.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(data)), "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": h.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": h.headers.get("Content-Encoding", ""),
        }  # fmt: skip
        backend = shutil.which("git-http-backend") or "/usr/lib/git-core/git-http-backend"
        done = subprocess.run([backend], input=data, env=env, capture_output=True, timeout=60)
        head, _, body = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers[key] = value.strip()
        self._answer(h, status, headers, body)

    @staticmethod
    def _answer(
        h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
