"""modgate.dbroute: finding a checksum database through the gated proxies, as go does."""

from __future__ import annotations

from pathlib import Path

import pytest

from modgate.config import (
    KNOWN_SUMDB_KEYS,
    SUMDB_ALIASES,
    Chain,
    Hop,
    Proxy,
    parse_chain,
    parse_gosumdb,
)
from modgate.dbroute import (
    Direct,
    Failed,
    NotHere,
    Probe,
    Supported,
    ThroughProxy,
    Unavailable,
    candidates,
    decide,
    find_route,
    probe,
    proxied,
)
from world.modules import World
from world.sumdb import TestSumdb
from world.upstream import Upstream

KEY = TestSumdb("sumdb.modgate.test").verifier_key
DB = parse_gosumdb(KEY)
assert DB is not None


def hops(spec: str) -> tuple[Hop, ...]:
    return parse_chain(spec).hops


@pytest.mark.parametrize(
    ("chain", "answers", "route"),
    [
        ("https://a", {"https://a": Supported()}, ThroughProxy("https://a/sumdb/db")),
        ("https://a,https://b", {"https://a": NotHere(404), "https://b": Supported()},
         ThroughProxy("https://b/sumdb/db")),
        ("https://a,https://b", {"https://a": NotHere(410), "https://b": NotHere(404)}, Direct()),
        # after `,` a failure is final: go reports the database unavailable
        ("https://a,https://b", {"https://a": Failed("502")}, Unavailable("https://a", "502")),
        # after `|` any failure tries the next
        ("https://a|https://b", {"https://a": Failed("reset"), "https://b": Supported()},
         ThroughProxy("https://b/sumdb/db")),
        ("https://a|https://b", {"https://a": Failed("reset"), "https://b": NotHere(404)}, Direct()),
        # the first that answers 200 wins; later ones are not asked
        ("https://a,https://b", {"https://a": Supported()}, ThroughProxy("https://a/sumdb/db")),
    ],
)  # fmt: skip
def test_decide_walks_the_hops_as_go_does(
    chain: str, answers: dict[str, Probe], route: object
) -> None:
    asked: list[str] = []

    def ask(hop: Hop) -> Probe:
        asked.append(hop.url)
        return answers[hop.url]

    assert decide("db", hops(chain), ask) == route
    assert asked == list(answers)


def test_candidates_are_every_proxys_upstream_hops_once() -> None:
    a = Proxy(url="https://p1", chain=parse_chain("https://m1|https://m2"))
    b = Proxy(url="https://p2", chain=parse_chain("https://m2,https://m3"))
    assert [h.url for h in candidates([a, b])] == ["https://m1", "https://m2", "https://m3"]


@pytest.mark.parametrize(
    ("gosumdb", "expected"),
    [
        (next(iter(KNOWN_SUMDB_KEYS)), True),  # go's default database, by name
        (KEY, True),
        (f"{KEY} https://sumdb.example", False),  # an explicit URL bypasses proxies
        (next(iter(SUMDB_ALIASES)), False),  # an alias with its own URL
    ],
    ids=["default-name", "key", "key-and-url", "alias"],  # KEY is made afresh per process
)
def test_proxied(gosumdb: str, expected: bool) -> None:
    assert proxied(gosumdb) is expected


def test_probe_asks_a_real_server(tmp_path: Path) -> None:
    db = TestSumdb("sumdb.modgate.test")
    with World() as world, Upstream(world, sumdb=db) as with_db, Upstream(world) as without:
        assert probe(Hop(with_db.url), db.name) == Supported()
        assert probe(Hop(without.url), db.name) == NotHere(404)
        with_db.fault("*/supported", status=503)
        assert isinstance(probe(Hop(with_db.url), db.name), Failed)
        port = with_db.port
    assert isinstance(probe(Hop(f"http://127.0.0.1:{port}"), db.name, timeout=2), Failed)


def test_find_route_remembers_the_way_for_when_no_proxy_answers(tmp_path: Path) -> None:
    assert DB is not None
    proxy = Proxy(url="https://p", chain=Chain((Hop("http://127.0.0.1:1"),)))
    found = find_route(DB, [proxy], tmp_path, lambda hop, name: Supported())
    assert found.settled and found.db.upstream == f"http://127.0.0.1:1/sumdb/{DB.name}"
    assert found.db.chain == Chain((Hop(found.db.upstream),), database=True)

    # Offline restart: the proxy cannot be asked; the way that worked stays, so the
    # lookups and tiles cached through it are found again.
    offline = find_route(DB, [proxy], tmp_path, lambda hop, name: Failed("refused"))
    assert not offline.settled and offline.db == found.db
    assert "the way that worked last time" in offline.why

    direct = find_route(DB, [proxy], tmp_path, lambda hop, name: NotHere(404))
    assert direct.settled and direct.db.upstream == "" and direct.db.url == f"https://{DB.name}"
    again = find_route(DB, [proxy], tmp_path, lambda hop, name: Failed("refused"))
    assert again.db == direct.db


def test_find_route_with_nothing_remembered_tries_the_failed_hop_then_direct(
    tmp_path: Path,
) -> None:
    """Where go gives up (a proxy that cannot be asked, after `,`), a long-running modgate
    started offline for the first time keeps trying that proxy, then the database itself,
    so it verifies once either comes back, whichever serves the database."""
    assert DB is not None
    proxy = Proxy(url="https://p", chain=Chain((Hop("https://m"),)))
    found = find_route(DB, [proxy], tmp_path, lambda hop, name: Failed("timed out"))
    assert not found.settled
    assert found.db.chain == Chain(
        (Hop(f"https://m/sumdb/{DB.name}", any_error=True), Hop(f"https://{DB.name}")),
        database=True,
    )
    assert not (tmp_path / "sumdb" / "routes.json").exists()  # nothing settled to remember
