"""The Mermaid sequence diagram: one exchange per request, a participant per peer."""

from __future__ import annotations

from modgate.trace.sequence import mermaid
from traceworld import UPSTREAM, rec, summary


def test_each_request_is_an_exchange_with_the_cache_or_the_peer_that_answered() -> None:
    records = [
        rec(0.0, kind="list", version="", cache="miss"),
        rec(0.1, kind="mod", cache="hit"),
        rec(0.2, kind="sumdb-lookup", cache="miss", upstream="https://sum.example"),
        rec(0.3, kind="zip", cache="miss", attempts=("https://a: 404", f"{UPSTREAM}: 200")),
        rec(0.4, kind="zip", module="example.com/x", status=403, cache="", rule_verdict="deny",
            rule_reason="no; not this # one"),
        rec(0.5, kind="tunnel", module="", version="", host="git.example", port=443, cache=""),
    ]  # fmt: skip
    text = mermaid(summary(records, label="review"), records)
    lines = text.splitlines()
    assert lines[:3] == [
        "sequenceDiagram",
        "    %% modgate trace session 1 'review': 6 requests",
        "    autonumber",
    ]
    assert "    participant C0 as go (127.0.0.1)" in lines
    assert "    participant U1 as upstream mirror.example" in lines
    assert "    participant U2 as checksum database sum.example" in lines
    assert "    participant U3 as git.example:443" in lines
    assert sum(line.startswith("    C0->>M: ") for line in lines) == 6
    assert sum(line.startswith("    M-->>C0: ") for line in lines) == 6
    assert "    K-->>M: hit" in lines
    assert "    U1-->>M: 200 after 2 tries" in lines
    # ; and # are Mermaid syntax: written as entity codes, which it shows as the characters
    assert "    Note over M: refused: no#59; not this #35; one" in lines
    assert "    M->>U3: tunnel (not intercepted)" in lines


def test_a_long_session_is_cut_at_the_limit() -> None:
    records = [rec(i * 0.01, version=f"v1.0.{i}") for i in range(10)]
    text = mermaid(summary(records), records, limit=4)
    assert text.count("C0->>M:") == 4
    assert "Note over M: … 6 more requests not shown" in text


def test_a_hash_refusal_is_a_note_with_the_hash_verdict() -> None:
    r = rec(
        kind="zip",
        status=502,
        cache="",
        rule_verdict="allow",
        rule="default",
        hash_verdict="refused",
        error="SECURITY: example.com/m@v1.0.0: upstream sent h1:A",
    )
    text = mermaid(summary([r]), [r])
    assert "    Note over M: refused: hash: SECURITY: example.com/m@v1.0.0: upstream sent h1:A" in (
        text.splitlines()
    )
    assert "default" not in text
