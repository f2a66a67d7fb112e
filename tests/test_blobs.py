"""modgate.blobs: the loopback file server for large bodies, over real sockets (plain
HTTP and TLS), serving stored files and files still being written (growing.py)."""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from modgate.blobs import BlobServer, Transfer
from modgate.growing import GrowingFile
from modgate.store import Entry
from world.certs import self_signed

BODY = os.urandom(3 * (1 << 20) + 12345)  # over two read chunks, not a whole number


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a certificate of 127.0.0.1 the client trusts."""
    server, cert = self_signed(
        tmp_path_factory.mktemp("tls"),
        "127.0.0.1",
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    )
    client = ssl.create_default_context(cadata=cert)
    return server, client


@pytest.fixture
def blobs(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[BlobServer]:
    server = BlobServer()
    server.start(tls[0])
    yield server
    server.stop()


class Done:
    """An on_done callback that remembers the transfer."""

    def __init__(self) -> None:
        self.transfer: Transfer | None = None
        self.event = threading.Event()

    def __call__(self, transfer: Transfer) -> None:
        self.transfer = transfer
        self.event.set()

    def wait(self) -> Transfer:
        assert self.event.wait(10), "on_done was never called"
        assert self.transfer is not None
        return self.transfer


def stored(tmp_path: Path, data: bytes = BODY) -> Path:
    path = tmp_path / "body"
    path.write_bytes(data)
    return path


def get(port: int, path: str, context: ssl.SSLContext | None = None) -> http.client.HTTPResponse:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    conn.request("GET", path)
    return conn.getresponse()


def test_a_stored_body_is_served_once_whole_with_its_headers(
    blobs: BlobServer, tmp_path: Path
) -> None:
    done = Done()
    path = blobs.offer(
        stored(tmp_path).open("rb"), len(BODY), hashlib.sha256(BODY).hexdigest(),
        {"Content-Type": "application/zip", "X-Modgate-Cache": "hit"}, on_done=done,
    )  # fmt: skip
    resp = get(blobs.port, path)
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/zip"
    assert resp.getheader("X-Modgate-Cache") == "hit"
    assert resp.read() == BODY
    assert done.wait() == Transfer(len(BODY), "", done.wait().ended)
    again = get(blobs.port, path)
    assert again.status == 404  # single use
    assert b"served once" in again.read()


def test_the_tls_port_serves_the_same(
    blobs: BlobServer, tmp_path: Path, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    path = blobs.offer(stored(tmp_path).open("rb"), len(BODY), hashlib.sha256(BODY).hexdigest(), {})
    assert blobs.tls_port and blobs.tls_port != blobs.port
    resp = get(blobs.tls_port, path, tls[1])
    assert resp.status == 200
    assert resp.read() == BODY


def test_a_body_changed_on_disk_never_arrives_whole_and_is_reported(
    blobs: BlobServer, tmp_path: Path
) -> None:
    damaged, done = threading.Event(), Done()
    file = stored(tmp_path)
    changed = bytearray(BODY)
    changed[-5] ^= 0xFF  # in the last piece: everything before it would have gone out
    file.write_bytes(bytes(changed))
    path = blobs.offer(file.open("rb"), len(BODY), hashlib.sha256(BODY).hexdigest(), {},
                       on_damage=damaged.set, on_done=done)  # fmt: skip
    resp = get(blobs.port, path)
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        resp.read()
    assert len(cut.value.partial) < len(BODY)
    assert damaged.is_set()
    assert "changed on disk" in done.wait().error


def raw_get(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def read_for(sock: socket.socket, seconds: float) -> bytes:
    """Everything that arrives within `seconds` (or until the peer closes)."""
    got, end = b"", time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not data:
            break
        got += data
    return got


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def growing_offer(
    blobs: BlobServer, tmp_path: Path, done: Done | None = None
) -> tuple[GrowingFile, Path, str]:
    spool = tmp_path / "spool"
    spool.write_bytes(b"")
    growing = GrowingFile(spool, len(BODY), "http://upstream")
    path = blobs.offer(growing.open(), len(BODY), "", {}, growing=growing,
                       on_done=done or Done())  # fmt: skip
    return growing, spool, path


def settled_entry() -> Entry:
    return Entry(key="k", status=200, content_type="application/zip", size=len(BODY),
                 sha256=hashlib.sha256(BODY).hexdigest(), stored_at=0, expires_at=None,
                 upstream="http://upstream", h1="h1:x", verdict="verified")  # fmt: skip


def test_a_growing_body_is_sent_as_it_arrives_and_ends_only_once_settled(
    blobs: BlobServer, tmp_path: Path
) -> None:
    done = Done()
    growing, spool, path = growing_offer(blobs, tmp_path, done)
    sock = raw_get(blobs.port, path)
    half = len(BODY) // 2
    with spool.open("ab") as out:
        out.write(BODY[:half])
        out.flush()
        growing.wrote(half)
        first = body_of(read_for(sock, 1.0))
        assert 0 < len(first) < half  # sent before the download ended, end held back
        assert BODY.startswith(first)
        out.write(BODY[half:])
        out.flush()
        growing.wrote(len(BODY))
    rest = read_for(sock, 1.0)
    assert len(first) + len(rest) < len(BODY)  # all written, not yet settled: held back
    growing.settle(settled_entry())
    rest += read_for(sock, 2.0)
    assert first + rest == BODY
    assert done.wait().error == ""


@pytest.mark.parametrize(
    ("ending", "error"),
    [
        ("check-failed", "not served: h1 mismatch for example.test/m@v1.0.0"),
        ("settled-other-bytes", "downloaded body changed while it was read"),
    ],
)
def test_a_growing_body_that_does_not_settle_as_read_is_cut_short(
    blobs: BlobServer, tmp_path: Path, ending: str, error: str
) -> None:
    done = Done()
    growing, spool, path = growing_offer(blobs, tmp_path, done)
    sock = raw_get(blobs.port, path)
    if ending == "check-failed":
        spool.write_bytes(BODY)
        growing.wrote(len(BODY))
        growing.fail("h1 mismatch for example.test/m@v1.0.0")
    else:
        spool.write_bytes(BODY[:-1] + b"?")  # not what was checked
        growing.wrote(len(BODY))
        growing.settle(settled_entry())
    assert len(body_of(read_for(sock, 3.0))) < len(BODY)
    assert done.wait().error == error


def test_an_offer_never_collected_is_withdrawn_with_its_reason(
    blobs: BlobServer, tmp_path: Path
) -> None:
    done = Done()
    path = blobs.offer(stored(tmp_path).open("rb"), len(BODY), "", {}, on_done=done)
    blobs.withdraw(path)
    assert done.wait().error == "never collected"
    assert get(blobs.port, path).status == 404


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_offer_is_served_within_its_ttl_and_refused_from_then_on(tmp_path: Path) -> None:
    clock = Clock()
    server = BlobServer(offer_ttl=120.0, clock=clock)
    server.start()
    try:
        digest = hashlib.sha256(BODY).hexdigest()
        early, late, late_done = Done(), Done(), Done()
        in_time = server.offer(stored(tmp_path).open("rb"), len(BODY), digest, {}, on_done=early)
        too_late = server.offer(stored(tmp_path).open("rb"), len(BODY), digest, {},
                                on_done=late_done)  # fmt: skip
        clock.now += 119.9
        resp = get(server.port, in_time)
        assert (resp.status, resp.read()) == (200, BODY)
        assert early.wait().error == ""
        clock.now += 0.1  # 120 s after it was offered: expired
        resp = get(server.port, too_late)
        assert resp.status == 404
        assert late_done.wait().error == "never collected"
        assert late.transfer is None
    finally:
        server.stop()


def test_an_expired_offer_is_dropped_on_time_without_a_request(tmp_path: Path) -> None:
    clock = Clock()
    server = BlobServer(offer_ttl=120.0, clock=clock)
    server.start()
    try:
        done = Done()
        file = stored(tmp_path).open("rb")
        server.offer(file, len(BODY), "", {}, on_done=done)
        clock.now += 120.0
        assert done.wait().error == "never collected"  # by the server's own sweep
        assert file.closed
    finally:
        server.stop()


def task_count() -> int:
    return (
        len(os.listdir("/proc/self/task"))
        if os.path.isdir("/proc/self/task")
        else (threading.active_count())
    )


def test_idle_connections_hold_no_threads_and_are_closed_after_the_idle_timeout(
    tmp_path: Path, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server = BlobServer(idle_timeout=1.5, workers=4)
    server.start(tls[0])
    idle: list[socket.socket] = []
    try:
        before = task_count()
        for i in range(300):
            port = server.port if i % 2 else server.tls_port
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.5)
        assert task_count() <= before + 4
        # Meanwhile a real transfer goes through, on either port.
        path = server.offer(stored(tmp_path).open("rb"), len(BODY),
                            hashlib.sha256(BODY).hexdigest(), {})  # fmt: skip
        resp = get(server.tls_port, path, tls[1])
        assert (resp.status, resp.read()) == (200, BODY)
        assert task_count() <= before + 4
        started = time.monotonic()
        for sock in idle:
            sock.settimeout(max(0.1, started + 5 - time.monotonic()))
            assert sock.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 5
    finally:
        for sock in idle:
            sock.close()
        server.stop()
