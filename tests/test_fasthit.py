"""The memo of cached small hits (modgate/fasthit.py): what keeps an answer valid, its
bounds, and the trace record of an answer sent again."""

from __future__ import annotations

import pytest
from mitmproxy.test import tflow

from modgate.addons.trace import _request_size
from modgate.fasthit import Answer, FastHits, Key, replayed, request_size
from modgate.store import Entry
from modgate.trace.record import Record

RECORD = Record(
    start=1.0, end=1.5, ttfb=0.5, client="10.0.0.1", client_port=1, method="GET",
    scheme="https", host="proxy.modgate.test", port=443, path="/m/@v/v1.0.0.mod", kind="mod",
    module="m", version="v1.0.0", status=200, bytes_in=99, bytes_out=12, cache="hit",
    upstream="https://up", hash_verdict="verified", hash_source="sumdb", h1="h1:x",
    rule_verdict="allow", rule="default", identity="alice", team="a",
)  # fmt: skip


def _entry(key: str = "v2 m/@v/v1.0.0.mod") -> Entry:
    return Entry(key, 200, "text/plain", 12, "0" * 64, 0.0, None, "https://up")


def _answer(entry: Entry, generation: tuple[object, ...], body: bytes = b"module m\n") -> Answer:
    return Answer(200, b"OK", (), body, entry, generation, RECORD, {}, None)


def _key(path: str = "/m/@v/v1.0.0.mod", team: str = "") -> Key:
    return ("proxy", "https", "proxy.modgate.test", 443, path, "gzip", team)


RUNTIME, TEAMS = object(), object()


def test_an_answer_is_replayed_while_its_generation_and_entry_are_the_same() -> None:
    memo, entry = FastHits(), _entry()
    answer = _answer(entry, (RUNTIME, TEAMS))
    memo.put(_key(), answer)
    assert memo.get(_key(), (RUNTIME, TEAMS), {entry.key: entry}.get) is answer
    assert (memo.hits, memo.misses) == (1, 0)


@pytest.mark.parametrize(
    ("generation", "held"),
    [
        ((object(), TEAMS), "same"),  # the rules were reloaded: a new runtime
        ((RUNTIME, object()), "same"),  # the teams were reloaded
        ((RUNTIME, None), "same"),  # the teams are gone
        ((RUNTIME, TEAMS), "none"),  # the store dropped it (deleted, damaged, evicted)
        ((RUNTIME, TEAMS), "other"),  # the store holds another copy (stored again)
    ],
    ids=["rules", "teams", "no-teams", "dropped", "replaced"],
)
def test_an_answer_whose_rules_teams_or_entry_changed_is_never_replayed(
    generation: tuple[object, ...], held: str
) -> None:
    memo, entry = FastHits(), _entry()
    memo.put(_key(), _answer(entry, (RUNTIME, TEAMS)))
    found = {"same": entry, "none": None, "other": _entry()}[held]
    assert memo.get(_key(), generation, lambda key: found) is None
    assert len(memo) == 0  # and it is dropped for good
    assert memo.get(_key(), (RUNTIME, TEAMS), {entry.key: entry}.get) is None


@pytest.mark.parametrize(
    "other",
    [_key("/m/@v/v1.0.0.MOD"), _key("/m/%40v/v1.0.0.mod"), _key("/m/@v/v1.0.0.mod?x"),
     _key(team="b"), ("endpoint", "https", "proxy.modgate.test", 443, "/m/@v/v1.0.0.mod", "gzip", "")],
    ids=["case", "escaped", "query", "team", "front"],
)  # fmt: skip
def test_another_spelling_team_or_front_end_is_another_key(other: Key) -> None:
    memo, entry = FastHits(), _entry()
    memo.put(_key(), _answer(entry, (RUNTIME, TEAMS)))
    assert memo.get(other, (RUNTIME, TEAMS), {entry.key: entry}.get) is None


def test_the_memo_keeps_the_most_recently_used_within_its_bounds() -> None:
    memo = FastHits(max_answers=2, max_bytes=100)
    entries = {f"v2 m{i}": _entry(f"v2 m{i}") for i in range(4)}
    for i in range(3):
        memo.put(_key(f"/{i}"), _answer(entries[f"v2 m{i}"], (RUNTIME,)))
    assert len(memo) == 2 and memo.get(_key("/0"), (RUNTIME,), entries.get) is None
    memo.get(_key("/1"), (RUNTIME,), entries.get)  # used: kept over /2
    memo.put(_key("/3"), _answer(entries["v2 m3"], (RUNTIME,), b"x" * 60))
    assert memo.get(_key("/2"), (RUNTIME,), entries.get) is None
    assert memo.get(_key("/1"), (RUNTIME,), entries.get) is not None
    memo.put(_key("/big"), _answer(entries["v2 m0"], (RUNTIME,), b"x" * 101))  # never held
    assert memo.get(_key("/big"), (RUNTIME,), entries.get) is None


def test_a_replayed_record_is_the_pipelines_with_this_requests_time_client_and_identity() -> None:
    answer = _answer(_entry(), (RUNTIME,))
    record = replayed(answer, start=10.0, end=10.25, client="127.0.0.1", client_port=5,
                      bytes_in=77, origin="go[12]", identity="bob")  # fmt: skip
    changed = {"start": 10.0, "end": 10.25, "ttfb": 0.25, "client": "127.0.0.1",
               "client_port": 5, "bytes_in": 77, "origin": "go[12]", "identity": "bob"}  # fmt: skip
    assert record == RECORD.replace(**changed)


def test_request_size_counts_as_the_trace_does() -> None:
    f = tflow.tflow()
    f.request.path = "/m/@v/v1.0.0.mod?x=1"
    f.request.headers["Accept-Encoding"] = "gzip"
    f.request.content = b""
    fields = list(f.request.headers.fields)
    assert request_size(len(f.request.method), len(f.request.path), fields, 0) == _request_size(
        f.request
    )
