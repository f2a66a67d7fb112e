"""peers.py: the process holding the other end of a connection, found in /proc."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from modgate.peers import owner

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_the_process_at_the_other_end(family: socket.AddressFamily) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (f"import socket,sys,time; s=socket.socket({int(family)}); s.connect(({host!r},{port}));"
                "print(s.getsockname()[1], flush=True); time.sleep(30)")  # fmt: skip
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            conn, peer = listener.accept()
            with conn:
                assert child.stdout is not None
                assert int(child.stdout.readline()) == peer[1]
                found = owner((peer[0], peer[1]), (host, port))
                assert found is not None and found.pid == child.pid
                assert found.name.startswith("python")
        finally:
            child.kill()
            child.wait()


def test_nobody_for_a_connection_that_does_not_exist() -> None:
    assert owner(("127.0.0.1", 1), ("127.0.0.1", 2)) is None
    assert owner(("203.0.113.9", 5555), ("127.0.0.1", 8080)) is None  # not this machine


def test_connections_arriving_together_are_looked_up_in_one_pass() -> None:
    """Lookups: twenty processes connect at once; each connection learns its own
    process, from far fewer passes over /proc than connections."""
    import asyncio

    from modgate import peers

    passes: list[int] = []

    class Counted(peers.Lookups):
        def _pass(self, connections: list[peers.Connection]) -> dict[peers.Connection, str]:
            passes.append(len(connections))
            return super()._pass(connections)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        code = (f"import socket,time; s=socket.socket(); s.connect(('127.0.0.1',{port}));"
                "time.sleep(30)")  # fmt: skip
        children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(20)]
        try:
            accepted = [listener.accept() for _ in children]
            lookups = Counted()

            async def all_at_once() -> list[str]:
                return await asyncio.gather(*(
                    asyncio.wrap_future(lookups.start((peer[0], peer[1]), ("127.0.0.1", port)))
                    for _, peer in accepted
                ))  # fmt: skip

            found = asyncio.run(all_at_once())
            pids = {child.pid for child in children}
            assert {int(f.rsplit("[", 1)[1].rstrip("]")) for f in found} == pids
            assert sum(passes) == 20 and len(passes) <= 2, passes
        finally:
            for child in children:
                child.kill()
                child.wait()
            for conn, _ in accepted:
                conn.close()
