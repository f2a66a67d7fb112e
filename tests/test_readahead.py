"""modgate.readahead: which .info answers a client is about to ask for."""

from __future__ import annotations

import asyncio

from modgate.config import Chain, Hop
from modgate.errors import UpstreamError
from modgate.goproxy import ModRequest
from modgate.readahead import (
    GUESSES_FREE,
    GUESSES_PER_HIT,
    GraphReadAhead,
    ReadAhead,
    Route,
    ZipReadAhead,
)

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


# --- the module graph -------------------------------------------------------------------


class Graph:
    """go.mod files by module@version, served after a pause; counts what was asked."""

    def __init__(self, mods: dict[str, str]) -> None:
        self.mods = mods
        self.asked: list[str] = []
        self.stored: set[str] = set()
        self.running = self.most = 0

    async def fetch(self, chain: Chain, req: ModRequest) -> tuple[int, bytes]:
        self.running += 1
        self.most = max(self.most, self.running)
        self.asked.append(f"{req.module}@{req.version}")
        await asyncio.sleep(0.001)
        self.running -= 1
        self.stored.add(f"{req.module}@{req.version}")
        text = self.mods.get(f"{req.module}@{req.version}")
        return (200, text.encode()) if text is not None else (404, b"not found\n")

    def has(self, chain: Chain, req: ModRequest) -> bool:
        return f"{req.module}@{req.version}" in self.stored


def gomod(go: str, *requires: str) -> str:
    lines = "".join(f"\t{r.replace('@', ' ')}\n" for r in requires)
    return f"module x\n\n{go}\n\nrequire (\n{lines})\n"


def read_ahead(graph: Graph, served: str, route: Route, **kw: int) -> GraphReadAhead:
    async def run() -> GraphReadAhead:
        ra = GraphReadAhead(graph.fetch, graph.has, **kw)
        module, version = served.split("@")
        ra.served_mod(module, version, graph.mods[served].encode(), route)
        await ra.idle()
        return ra

    return asyncio.run(run())


def test_requirements_are_read_ahead_once_each_never_those_refused() -> None:
    graph = Graph({
        "a.test/m@v1.0.0": gomod("go 1.21", "b.test/m@v1.0.0", "no.test/m@v1.0.0",
                                 "c.test/m@v1.2.0", "b.test/m@v1.0.0"),
        "b.test/m@v1.0.0": gomod("go 1.21", "d.test/m@v1.0.0"),
        "c.test/m@v1.2.0": gomod("go 1.21"),
    })  # fmt: skip
    ra = read_ahead(graph, "a.test/m@v1.0.0", lambda m: None if m.startswith("no.") else A)
    # b is pruned (go 1.21): go does not load d's go.mod below it, nor does the read-ahead.
    assert sorted(graph.asked) == ["b.test/m@v1.0.0", "c.test/m@v1.2.0"]
    assert ra.fetched == 2


def test_a_go_mod_read_ahead_once_is_known_as_such_and_not_read_again() -> None:
    """A warm build serves every go.mod again: `expanded` lets the caller skip the parse."""
    graph = Graph({"a.test/m@v1.0.0": gomod("go 1.21", "b.test/m@v1.0.0"),
                   "b.test/m@v1.0.0": gomod("go 1.21")})  # fmt: skip
    ra = read_ahead(graph, "a.test/m@v1.0.0", lambda m: A)
    assert ra.expanded("a.test/m", "v1.0.0")
    assert not ra.expanded("b.test/m", "v1.0.0")  # fetched, but never served to a client
    asked = list(graph.asked)

    async def again() -> None:
        ra.served_mod("a.test/m", "v1.0.0", b"not a go.mod at all", lambda m: A)
        await ra.idle()

    asyncio.run(again())
    assert graph.asked == asked


def test_unpruned_go_mod_files_are_followed_as_go_follows_them_up_to_the_depth() -> None:
    chain = [f"m{i}.test/m@v1.0.0" for i in range(6)]
    graph = Graph({chain[i]: gomod("go 1.16", chain[i + 1]) for i in range(5)})
    graph.mods[chain[5]] = gomod("")  # no go line: unpruned too
    read_ahead(graph, chain[0], lambda m: A, depth=3)
    assert graph.asked == chain[1:4]


def test_at_most_readers_fetches_at_once_and_what_is_stored_is_not_fetched() -> None:
    wide = [f"w{i}.test/m@v1.0.0" for i in range(40)]
    graph = Graph({"a.test/m@v1.0.0": gomod("go 1.16", *wide)})  # unpruned: no guesses
    graph.stored.add(wide[0])
    read_ahead(graph, "a.test/m@v1.0.0", lambda m: A, readers=4)
    assert graph.most == 4
    assert sorted(graph.asked) == sorted(wide[1:])


def test_guesses_from_pruned_go_mod_files_are_made_while_the_client_asks_for_them() -> None:
    """A pruned go.mod's requirements are guesses (go 1.17+ loads them only below an
    unpruned module): GUESSES_FREE per client, then GUESSES_PER_HIT more for each one the
    client asked for. An unpruned go.mod's requirements are not guesses."""
    wide = [f"w{i:02}.test/m@v1.0.0" for i in range(40)]
    graph = Graph({
        "a.test/m@v1.0.0": gomod("go 1.21", *wide[:20]),
        "b.test/m@v1.0.0": gomod("go 1.21", *wide[20:30]),
        "c.test/m@v1.0.0": gomod("go 1.16", *wide[30:]),
    })  # fmt: skip

    async def run() -> None:
        ra = GraphReadAhead(graph.fetch, graph.has)
        served = lambda m, client="go": ra.served_mod(  # noqa: E731
            m, "v1.0.0", graph.mods[f"{m}@v1.0.0"].encode(), lambda _: A, client
        )
        served("a.test/m")
        await ra.idle()
        assert graph.asked == wide[:GUESSES_FREE]
        ra.asked("go", "w00.test/m", "v1.0.0")  # a guess that paid
        ra.asked("go", "w00.test/m", "v1.0.0")  # (counted once)
        ra.asked("go", "zz.test/m", "v1.0.0")  # not a guess
        served("b.test/m")
        await ra.idle()
        assert graph.asked[GUESSES_FREE:] == wide[20 : 20 + GUESSES_PER_HIT]
        served("b.test/m", client="another")  # another client's own guesses; b is done
        served("c.test/m")  # unpruned: all of them, whatever the guesses
        await ra.idle()
        assert graph.asked[GUESSES_FREE + GUESSES_PER_HIT :] == wide[30:]

    asyncio.run(run())


# --- the zips -------------------------------------------------------------------------


class Zips:
    """A gateway's prefetch and has for ZipReadAhead: `stored` zips, `failing` ones."""

    def __init__(self, stored: set[str] = frozenset(), failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.stored, self.failing = set(stored), set(failing)
        self.asked: list[str] = []
        self.running = self.most = 0

    async def prefetch(self, chain: Chain, req: ModRequest) -> bool:
        name = f"{req.module}@{req.version}"
        self.asked.append(name)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.002)
            if name in self.failing:
                raise UpstreamError(f"{name}: 502")
            self.stored.add(name)
            return True
        finally:
            self.running -= 1

    def has(self, chain: Chain, req: ModRequest) -> bool:
        assert req.path.endswith(".zip"), req.path
        return f"{req.module}@{req.version}" in self.stored


def zips_read_ahead(zips: Zips, asked: list[str], readers: int = 3) -> ZipReadAhead:
    async def run() -> ZipReadAhead:
        ra = ZipReadAhead(zips.prefetch, zips.has, readers=readers)
        for name in asked:
            module, version = name.split("@")
            ra.asked(A, module, version)
        await ra.idle()
        return ra

    return asyncio.run(run())


def test_the_zip_of_each_info_asked_is_fetched_once_in_order_a_few_at_a_time() -> None:
    names = [f"m{i:02d}.test/m@v1.0.{i}" for i in range(12)]
    zips = Zips(stored={names[3]})
    ra = zips_read_ahead(zips, names + names[:5])  # asked again: not fetched again
    assert zips.asked == [n for n in names if n != names[3]]
    assert zips.most == 3
    assert ra.fetched == 11


def test_a_zip_that_fails_to_come_is_left_to_the_client_and_the_rest_come() -> None:
    names = [f"m{i}.test/m@v1.0.0" for i in range(4)]
    zips = Zips(failing={names[1]})
    ra = zips_read_ahead(zips, names, readers=1)
    assert zips.asked == names and ra.fetched == 3
    assert names[1] not in zips.stored


def test_a_version_that_is_not_one_is_never_asked_for() -> None:
    zips = Zips()
    zips_read_ahead(zips, ["a.test/m@v1.0.0/../../x", "a.test/Upper@v1.0.0"])
    assert zips.asked == ["a.test/Upper@v1.0.0"]  # asked as go asks it: !upper
