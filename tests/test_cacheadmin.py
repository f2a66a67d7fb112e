"""cacheadmin.py: items named by what they answer; patterns, eviction and the prune plan."""

from __future__ import annotations

import pytest

from modgate.cacheadmin import Item, evictable, item, matching, prune_plan, stats
from modgate.errors import ModgateError
from modgate.store import Entry


def entry(key: str, size: int = 10, stored: float = 0.0) -> Entry:
    return Entry(key=key, status=200, content_type="", size=size, sha256="", stored_at=stored,
                 expires_at=None, upstream="")  # fmt: skip


@pytest.mark.parametrize(
    ("key", "kind", "module", "version"),
    [
        ("v2 example.com/!upper/m/@v/v1.2.0.zip", "zip", "example.com/Upper/m", "v1.2.0"),
        ("v1 https://p.example example.com/m/@v/list", "list", "example.com/m", ""),
        ("v2 example.com/m/@latest", "latest", "example.com/m", ""),
        ("v2 sumdb/sum.example/lookup/example.com/m@v1.0.0", "sumdb-lookup", "example.com/m", "v1.0.0"),
        ("v2 sumdb/localhost.localdev/sumdb/tile/8/0/000", "sumdb-tile", "", ""),
        ("v2 robots.txt", "other", "", ""),
    ],
)  # fmt: skip
def test_items_are_named_by_what_they_answer(
    key: str, kind: str, module: str, version: str
) -> None:
    i = item(entry(key), None)
    assert (i.kind, i.module, i.version) == (kind, module, version)


def it(key: str, module: str, version: str, kind: str = "zip", size: int = 10,
       stored: float = 0.0, used: float = 0.0) -> Item:  # fmt: skip
    return Item(key, kind, module, version, size, stored, used, 200, "verified")


ITEMS = [
    it("a1", "golang.org/x/mod", "v0.1.0", used=5),
    it("a2", "golang.org/x/mod", "v0.2.0", used=1),
    it("b1", "golang.org/x/text", "v0.3.0", used=3, size=100),
    it("b2", "golang.org/x/text", "", kind="list", used=9),
    it("c1", "example.com/a/b", "v1.0.0", used=2),
    it("s1", "golang.org/x/mod", "v0.1.0", kind="sumdb-lookup", used=0),
]


@pytest.mark.parametrize(
    ("pattern", "keys"),
    [
        ("", {"a1", "a2", "b1", "b2", "c1", "s1"}),
        ("golang.org/x/*", {"a1", "a2", "b1", "b2", "s1"}),
        ("golang.org/x/mod@v0.1.*", {"a1", "s1"}),
        ("example.com/a", {"c1"}),  # and below, as module rules match
        ("example.com", {"c1"}),
        ("example.co", set()),
    ],
)  # fmt: skip
def test_matching(pattern: str, keys: set[str]) -> None:
    assert {i.key for i in matching(ITEMS, pattern)} == keys


def test_evict_a_module_or_a_version() -> None:
    assert {i.key for i in evictable(ITEMS, "golang.org/x/text")} == {"b1", "b2"}
    # A version: its answers, and the module's lists (which name it).
    assert {i.key for i in evictable(ITEMS, "golang.org/x/text@v0.3.0")} == {"b1", "b2"}
    with pytest.raises(ModgateError, match="no globs"):
        evictable(ITEMS, "golang.org/x/*")


def test_prune_goes_least_recently_used_first_and_never_touches_proofs() -> None:
    plan = prune_plan(ITEMS, now=10, max_size=sum(i.size for i in ITEMS) - 15)
    assert [i.key for i in plan] == ["a2", "c1"]  # used at 1 and 2; s1 (used at 0) is a proof
    assert [i.key for i in prune_plan(ITEMS, now=10, unused_since=6)] == ["a2", "c1", "b1"]
    everything = prune_plan(ITEMS, now=10, max_size=0)
    assert {i.key for i in everything} == {"a1", "a2", "b1", "b2", "c1"}
    with pytest.raises(ModgateError, match="--max-size"):
        prune_plan(ITEMS, now=10)


def test_stats() -> None:
    s = stats(ITEMS)
    assert (s.entries, s.size, s.modules, s.versions) == (6, 150, 3, 4)
    assert s.largest[0] == ("golang.org/x/text", 110)
    assert s.by_kind["zip"] == (4, 130)


@pytest.mark.parametrize(
    ("key", "database"),
    [
        ("v2 sumdb/sum.example/lookup/example.com/m@v1.0.0", "sum.example"),
        ("v2 sumdb/localhost.localdev/sumdb/tile/8/0/000", "localhost.localdev/sumdb"),
        ("v2 sumdb/sum.example/latest", "sum.example"),
        ("v2 example.com/m/@v/v1.0.0.zip", ""),
    ],
)
def test_a_checksum_database_item_names_its_database(key: str, database: str) -> None:
    assert item(entry(key), None).database == database
