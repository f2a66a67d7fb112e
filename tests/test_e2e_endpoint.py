"""The GOPROXY endpoint as an HTTP/1.1 server (modgate/endpoint.py), spoken to over raw
sockets against a real `modgate run`: keep-alive, pipelined requests answered in
order, HEAD, malformed and oversized requests refused with a reason go would print, a
request that never finishes arriving (slowloris) cut off, and the trace of what it
served. (go's own downloads through it are in test_e2e_core.py and the others.)
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from world.gate import Gate, modgate_command
from world.modules import UPPER, World, proxy_path
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
PRIVATE = "example.modgate.test"


@pytest.fixture(scope="module")
def gate(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    home = tmp_path_factory.mktemp("endpoint")
    with Upstream(world) as upstream:
        rules = (f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url!r}\n"
                 f"checksum:\n  private: {PRIVATE}\n")  # fmt: skip
        with Gate(home / "gate", rules) as g:
            yield g


def _connect(gate: Gate) -> socket.socket:
    host, port = gate.goproxy_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _read_answer(f: object, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer from the file `f` (a socket's makefile)."""
    status_line = f.readline()  # type: ignore[attr-defined]
    assert status_line, "the connection closed with no answer"
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline().decode().rstrip("\r\n")) != "":  # type: ignore[attr-defined]
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = b"" if head_only else f.read(length)  # type: ignore[attr-defined]
    return status, headers, body


def _get(path: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} /{path} HTTP/1.1\r\nHost: modgate\r\n{extra}\r\n".encode()


def test_pipelined_requests_on_one_connection_are_answered_in_order(
    gate: Gate, world: World
) -> None:
    upper = world.get(UPPER, "v1.2.1")
    paths = [proxy_path(UPPER, "v1.2.1", ".info"), proxy_path(UPPER, "v1.2.1", ".mod"),
             "robots.txt", proxy_path(UPPER, "v1.2.1", ".info")]  # fmt: skip
    with _connect(gate) as sock, sock.makefile("rb") as f:
        sock.sendall(b"".join(_get(p) for p in paths))  # all at once: pipelined
        answers = [_read_answer(f) for _ in paths]
        # Still open (keep-alive): one more request on it.
        sock.sendall(_get(paths[1]))
        again = _read_answer(f)
    assert [a[0] for a in answers] == [200, 200, 404, 200]  # robots.txt: no proxy path
    assert answers[0][2] == answers[3][2] == upper.info
    assert answers[1][2] == again[2] == upper.gomod
    assert answers[2][2].startswith(b"modgate: ")
    assert answers[2][1]["content-type"].startswith("text/plain")
    # From the store, or from the fetch that is still storing it (joined: "miss").
    assert again[1]["x-modgate-cache"] in ("hit", "miss")


def test_head_gets_the_head_of_the_answer_and_no_body(gate: Gate) -> None:
    with _connect(gate) as sock, sock.makefile("rb") as f:
        sock.sendall(_get(proxy_path(UPPER, "v1.2.1", ".mod"), method="HEAD"))
        status, headers, _ = _read_answer(f, head_only=True)
        # Not part of the module proxy protocol (the Router's decision), and no body
        # follows: the next answer on the connection starts right after the head.
        sock.sendall(_get(proxy_path(UPPER, "v1.2.1", ".mod")))
        status2, _, body2 = _read_answer(f)
    assert status == 405 and int(headers["content-length"]) > 0
    assert status2 == 200 and body2.startswith(b"module ")


def test_http10_closes_after_its_answer(gate: Gate) -> None:
    with _connect(gate) as sock, sock.makefile("rb") as f:
        sock.sendall(f"GET /{proxy_path(UPPER, 'v1.2.1', '.mod')} HTTP/1.0\r\n\r\n".encode())
        status, headers, _ = _read_answer(f)
        assert status == 200 and headers.get("connection") == "close"
        assert f.read() == b""  # closed


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost modgate\r\n\r\n", 400, b"malformed HTTP request"),
        (b"BREW /pot HTCPCP/1.0\r\n\r\n", 400, b"malformed HTTP request"),
        (b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\n\r\n", 431, b"over 65536 bytes"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, b"more than 100 header"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000, 413, b"body over"),
    ],
    ids=["bad-header", "bad-method", "long-url", "many-headers", "large-body"],
)
def test_a_request_the_server_cannot_take_is_refused_with_a_reason_and_closed(
    gate: Gate, request_bytes: bytes, status: int, reason: bytes
) -> None:
    with _connect(gate) as sock, sock.makefile("rb") as f:
        # Refused before it was all sent, maybe: the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request_bytes)
        got, headers, body = _read_answer(f)
        assert f.read() == b""  # and the connection is closed
    assert got == status
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body.startswith(b"modgate: bad request: ") and reason in body, body
    assert body.endswith(b"; not served\n") and body.count(b"\n") == 1


def test_a_request_that_never_finishes_arriving_is_cut_off(gate: Gate) -> None:
    from modgate import endpoint

    with _connect(gate) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /robots.txt HTTP/1.1\r\nHost: mod")  # and then nothing
        started = time.monotonic()
        status, _, body = _read_answer(f)
        waited = time.monotonic() - started
    assert status == 408 and b"not received whole in time" in body
    assert endpoint.REQUEST_TIMEOUT - 1 <= waited <= endpoint.REQUEST_TIMEOUT + 3


def test_every_request_is_traced_under_the_proxy_s_url(gate: Gate, world: World) -> None:
    path = proxy_path(UPPER, "v1.2.1", ".info")
    with urllib.request.urlopen(f"{gate.goproxy_url}/{path}") as r:  # cached, whatever ran before
        assert r.status == 200
    with _connect(gate) as sock, sock.makefile("rb") as f:
        sock.sendall(_get(path, "X-Probe: traced\r\n"))
        assert _read_answer(f)[0] == 200
    time.sleep(0.5)  # the writer commits every 0.1 s
    out = subprocess.run(
        [sys.executable, "-m", "modgate", "trace", "--cache-dir", str(gate.cache_dir),
         "show", "last", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"https://{HOST}/{path}" in out.stdout or (
        f'"host": "{HOST}"' in out.stdout and path in out.stdout
    ), out.stdout[-3000:]
    assert '"kind": "info"' in out.stdout and '"cache": "hit"' in out.stdout, out.stdout[-3000:]


@pytest.mark.parametrize(("workers", "said"), [("1", "GOPROXY endpoint 127.0.0.1:{port}"),
                                                ("2", "cannot listen on 127.0.0.1:{port}")])  # fmt: skip
def test_a_port_in_use_for_the_endpoint_stops_modgate_saying_which(
    tmp_path: Path, workers: str, said: str
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"proxies:\n  - url: https://{HOST}\n    upstream: http://127.0.0.1:9\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            modgate_command("run", "--listen-port", "0", "--goproxy-port", str(port),
                            "--confdir", str(tmp_path / "conf"), "--rules", str(rules),
                            "--workers", workers),
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert said.format(port=port) in out and "in use" in out, out
    assert "modgate: proxy on" not in out
