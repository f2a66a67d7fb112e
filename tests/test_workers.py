"""modgate.workers: claiming ports, and listeners that share them (the supervisor and
its workers run end to end in test_e2e_workers.py)."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from modgate.errors import ModgateError
from modgate.workers import PortClaim, ReusePortLoop, this_worker

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT spreading: Linux")


def test_port_zero_is_claimed_as_a_real_port_and_a_second_claim_is_refused() -> None:
    first = PortClaim("127.0.0.1", [0, 0])
    try:
        assert all(first.ports) and first.ports[0] != first.ports[1]
        with pytest.raises(ModgateError, match=f"another modgate .* on port {first.ports[0]}"):
            PortClaim("127.0.0.1", [first.ports[0]])
    finally:
        first.close()
    PortClaim("127.0.0.1", first.ports).close()  # released with its claim


def test_a_port_another_program_listens_on_is_refused() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ModgateError, match=f"127.0.0.1:{port}: address already in use"):
            PortClaim("127.0.0.1", [port])


def test_workers_listen_on_the_claimed_port_together_and_others_cannot() -> None:
    claim = PortClaim("127.0.0.1", [0])
    port = claim.ports[0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def two_workers() -> None:
        first = await asyncio.start_server(handler, "127.0.0.1", port)
        second = await asyncio.start_server(handler, "127.0.0.1", port)
        first.close()
        second.close()

    try:
        asyncio.run(two_workers(), loop_factory=ReusePortLoop)
        with pytest.raises(OSError, match="in use"):  # an ordinary loop: no SO_REUSEPORT
            asyncio.run(two_workers())
    finally:
        claim.close()


def test_a_process_is_a_worker_only_when_its_supervisor_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MODGATE_WORKER", raising=False)
    assert this_worker() is None
    monkeypatch.setenv("MODGATE_WORKER", "1:7")
    worker = this_worker()
    assert worker is not None and (worker.index, worker.fd) == (1, 7)
