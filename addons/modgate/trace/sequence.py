"""A session as a Mermaid sequence diagram: go → modgate → cache / upstream / checksum
database, for docs and reviews. Paste the text into any Markdown that renders Mermaid.

Each request is one exchange: go asks modgate; a cache answer is a look-up in the cache;
a miss or refresh is a fetch from the upstream that answered (each upstream and
checksum database its own participant); a refusal or error is a note. Tunnels are
go → modgate → host.
"""

from __future__ import annotations

from collections.abc import Sequence

from modgate.trace.escape import mermaid as _text
from modgate.trace.record import FROM_CACHE, TUNNEL, Record
from modgate.trace.report import ms
from modgate.trace.store import SessionSummary

MAX_REQUESTS = 500


def mermaid(session: SessionSummary, records: Sequence[Record], limit: int = MAX_REQUESTS) -> str:
    shown = records[:limit] if limit else records
    clients = sorted({r.client for r in shown}) or ["go"]
    upstreams: dict[str, str] = {}
    for r in shown:
        peer = _peer(r)
        if peer and peer not in upstreams:
            upstreams[peer] = f"U{len(upstreams) + 1}"
    label = f" '{_text(session.label)}'" if session.label else ""
    lines = [
        "sequenceDiagram",
        f"    %% modgate trace session {session.id}{label}: {len(records)} requests",
        "    autonumber",
    ]
    for i, client in enumerate(clients):
        lines.append(f"    participant C{i} as go ({_text(client)})")
    lines += ["    participant M as modgate", "    participant K as cache"]
    for peer, alias in upstreams.items():
        lines.append(f"    participant {alias} as {_text(peer)}")
    ids = {c: f"C{i}" for i, c in enumerate(clients)}
    for r in shown:
        lines += _exchange(r, ids.get(r.client, "C0"), upstreams)
    if len(shown) < len(records):
        lines.append(f"    Note over M: … {len(records) - len(shown)} more requests not shown")
    return "\n".join(lines) + "\n"


def _peer(r: Record) -> str:
    if r.kind == TUNNEL:
        return f"{r.host}:{r.port}"
    if r.cache in FROM_CACHE or not r.upstream:
        return ""
    host = r.upstream.split("://", 1)[-1].split("/", 1)[0]
    return f"checksum database {host}" if r.kind.startswith("sumdb") else f"upstream {host}"


def _exchange(r: Record, client: str, upstreams: dict[str, str]) -> list[str]:
    ask = _text(f"{r.method} {r.target} ({r.kind})" if r.kind != TUNNEL else f"CONNECT {r.target}")
    answer = _text(f"{r.status or 'no answer'} {r.cache or ''} {ms(r.duration)} ms")
    lines = [f"    {client}->>M: {ask}"]
    peer = upstreams.get(_peer(r))
    if r.kind == TUNNEL:
        lines += [f"    M->>{peer}: tunnel (not intercepted)", f"    {peer}-->>M: closed"]
    elif r.refused:
        lines.append(f"    Note over M: refused: {_text(r.refusal)}")
    elif r.cache in FROM_CACHE:
        lines += [f"    M->>K: look up {_text(r.kind)}", f"    K-->>M: {r.cache}"]
    elif peer:
        tries = f" after {len(r.attempts)} tries" if len(r.attempts) > 1 else ""
        lines += [
            "    M->>K: look up",
            f"    K-->>M: {r.cache or 'miss'}",
            f"    M->>{peer}: GET {_text(r.path)}",
            f"    {peer}-->>M: {r.status}{tries}",
        ]
    if r.error and not r.refused:
        lines.append(f"    Note over M: {_text(r.error[:120])}")
    lines.append(f"    M-->>{client}: {answer}")
    return lines
