"""modgate.readahead: which .info answers a client is about to ask for."""

from __future__ import annotations

from modgate.config import Chain, Hop
from modgate.readahead import ReadAhead

A = Chain((Hop("http://127.0.0.1:1"),))
B = Chain((Hop("http://127.0.0.1:2"),))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_highest_version_of_each_module_is_due_sorted_by_path_once() -> None:
    ra = ReadAhead()
    for module, version in [("z.test/m", "v1.0.0"), ("a.test/m", "v1.2.0"),
                            ("a.test/m", "v1.10.0"), ("a.test/m", "v1.9.0"),
                            ("m.test/x", "v2.0.0-rc.1"), ("m.test/x", "v1.9.9"),
                            ("p.test/y", "v1.0.0-20200101000000-abcdefabcdef"),
                            ("p.test/y", "v1.0.0")]:  # fmt: skip
        ra.served_mod("10.0.0.1", A, module, version)
    assert ra.due("10.0.0.1", "z.test/m") == [
        (A, "a.test/m", "v1.10.0"),  # semver order, not text order
        (A, "m.test/x", "v2.0.0-rc.1"),
        (A, "p.test/y", "v1.0.0"),  # a release sorts above its pseudo-versions
    ]  # the module being asked for is the client's own request
    assert ra.due("10.0.0.1", "z.test/m") == []  # handed out once


def test_clients_and_chains_are_kept_apart() -> None:
    ra = ReadAhead()
    ra.served_mod("10.0.0.1", A, "a.test/m", "v1.0.0")
    ra.served_mod("10.0.0.1", B, "a.test/m", "v1.5.0")
    ra.served_mod("10.0.0.2", A, "b.test/m", "v1.0.0")
    assert ra.due("10.0.0.3", "x") == []
    assert sorted(ra.due("10.0.0.1", "x"), key=str) == sorted(
        [(A, "a.test/m", "v1.0.0"), (B, "a.test/m", "v1.5.0")], key=str
    )
    assert ra.due("10.0.0.2", "x") == [(A, "b.test/m", "v1.0.0")]


def test_a_client_silent_for_the_ttl_starts_afresh() -> None:
    clock = Clock()
    ra = ReadAhead(ttl=60, clock=clock)
    ra.served_mod("c", A, "old.test/m", "v1.0.0")
    clock.now += 61
    assert ra.due("c", "x") == []  # a build long gone
    ra.served_mod("c", A, "old.test/m", "v1.0.0")
    clock.now += 61
    ra.served_mod("c", A, "new.test/m", "v1.0.0")
    assert ra.due("c", "x") == [(A, "new.test/m", "v1.0.0")]


def test_memory_is_bounded_in_clients_and_modules() -> None:
    ra = ReadAhead(max_clients=2, max_modules=3)
    for i in range(5):
        ra.served_mod("c", A, f"m{i}.test/m", "v1.0.0")
    assert [d[1] for d in ra.due("c", "x")] == ["m0.test/m", "m1.test/m", "m2.test/m"]
    for client in ("c1", "c2", "c3"):
        ra.served_mod(client, A, "a.test/m", "v1.0.0")
    assert ra.due("c1", "x") == []  # the least recently seen client was dropped
    assert ra.due("c3", "x") == [(A, "a.test/m", "v1.0.0")]
