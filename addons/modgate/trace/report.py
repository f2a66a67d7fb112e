"""Traces as text: the live line, `modgate trace ls` and `modgate trace show`, and their
JSON forms. Plain, deterministic output that fits a terminal; times in local time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modgate.trace.escape import terminal
from modgate.trace.record import FROM_CACHE, FROM_UPSTREAM, TUNNEL, Record
from modgate.trace.store import SessionSummary

TARGET_WIDTH = 56
SLOWEST = 5


def live_line(r: Record) -> str:
    """One finished request: kind, what, status, cache outcome, milliseconds; escaped
    for a terminal (the path is the client's, the error may be the upstream's)."""
    line = f"{r.kind} {r.target} {r.status or '-'} {r.cache or '-'} {ms(r.duration)}ms"
    if r.refused:
        line += f" refused: {r.refusal}"
    elif r.error:
        line += f" error: {r.error[:160]}"
    return terminal(line)


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1000
    return f"{value:.1f}" if round(value, 1) < 10 else f"{value:.0f}"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Aligned columns of `rows`, each cell escaped for the terminal."""
    rows = [[terminal(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [fmt(header), *(fmt(r) for r in rows)]


def _clip(text: str, width: int = TARGET_WIDTH) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _clip_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --- modgate trace ls ------------------------------------------------------------------


def ls_text(sessions: Sequence[SessionSummary]) -> str:
    if not sessions:
        return "no sessions recorded yet\n"
    rows = []
    for s in sessions:
        ratio = s.hit_ratio
        rows.append([
            str(s.id), when(s.first or s.started), s.client if s.client != "*" else "any",
            s.label or "-", str(s.requests), str(s.versions), size(s.bytes_out),
            "-" if ratio is None else f"{ratio:.0%}", f"{s.duration:.1f}s",
            str(s.refused), str(s.errors),
        ])  # fmt: skip
        if any(x.teams for x in sessions):  # who asked: only where rules.yaml has teams
            rows[-1].insert(3, terminal(s.teams) or "-")
    header = ["ID", "STARTED", "CLIENT", "LABEL", "REQS", "MODULES", "BYTES", "HITS",
              "DURATION", "REFUSED", "ERRORS"]  # fmt: skip
    numbers = {0, 4, 5, 6, 7, 8, 9, 10}
    if any(s.teams for s in sessions):
        header.insert(3, "TEAM")
        numbers = {0, 5, 6, 7, 8, 9, 10, 11}
    return "\n".join(_table(header, rows, numbers)) + "\n"


def summary_json(s: SessionSummary) -> dict[str, Any]:
    return {
        "id": s.id, "client": s.client, "label": s.label, "started": s.first or s.started,
        "ended": s.last, "requests": s.requests, "module_versions": s.versions,
        "bytes_out": s.bytes_out, "hits": s.hits, "hit_ratio": s.hit_ratio,
        "duration": s.duration, "refused": s.refused, "errors": s.errors,
        "teams": s.teams.split(",") if s.teams else [],
        "identities": s.identities.split(",") if s.identities else [],
    }  # fmt: skip


# --- modgate trace show ----------------------------------------------------------------


def show_text(
    s: SessionSummary, records: Sequence[Record], audit: Sequence[int | None] = ()
) -> str:
    """`audit`: each record's audit entry (its seq), when one was found: an AUDIT column."""
    label = f' "{s.label}"' if s.label else ""
    lines = [
        terminal(
            f"session {s.id}{label} · client {s.client if s.client != '*' else 'any'} · "
            f"{when(s.first or s.started)} · {len(records)} requests · {s.duration:.2f}s"
            + (f" · team {s.teams} ({s.identities})" if s.teams else "")
        ),
        "",
    ]
    t0 = records[0].start if records else 0.0
    rows = []
    for i, r in enumerate(records, 1):
        rows.append([
            str(i), f"+{ms(r.start - t0)}", ms(r.duration), ms(r.ttfb), r.kind,
            _clip(r.target), str(r.status or "-"), r.cache or "-", size(r.bytes_out),
            _source(r), _note(r),
        ])  # fmt: skip
    header = ["#", "AT(ms)", "MS", "TTFB", "KIND", "MODULE@VERSION", "STATUS", "CACHE",
              "BYTES", "FROM", "NOTE"]  # fmt: skip
    if any(seq is not None for seq in audit):
        header.insert(-1, "AUDIT")
        for row, seq in zip(rows, audit, strict=True):
            row.insert(-1, f"#{seq}" if seq is not None else "-")
    lines += _table(header, rows, {0, 1, 2, 3, 6, 8})
    lines += ["", *(terminal(line) for line in _summary_lines(records))]
    return "\n".join(lines) + "\n"


def _source(r: Record) -> str:
    if r.kind == TUNNEL:
        return "tunnel"
    if r.cache in FROM_CACHE:
        return "cache"
    if r.upstream:
        tries = len(r.attempts)
        return f"{_host(r.upstream)}" + (f" ({tries} tries)" if tries > 1 else "")
    return "-"


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _note(r: Record) -> str:
    if r.refused:
        return _clip_end(f"refused: {r.refusal}", 80)
    if r.error:
        return _clip(r.error, 80)
    if r.hash_verdict:
        note = f"hash {r.hash_verdict}" + (f": {r.hash_source}" if r.hash_source else "")
        return note if len(note) <= 40 else note[:39] + "…"
    return ""


def _summary_lines(records: Sequence[Record]) -> list[str]:
    kinds = Counter(r.kind for r in records)
    outcomes = Counter(r.cache for r in records if r.cache)
    upstream = sum(r.bytes_out or 0 for r in records if r.cache in FROM_UPSTREAM)
    cached = sum(r.bytes_out or 0 for r in records if r.cache in FROM_CACHE)
    lines = [
        "kinds:    " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
        "cache:    " + (", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())) or "-"),
        f"bytes:    {size(upstream)} from upstream, {size(cached)} from the cache",
    ]
    slow = sorted(records, key=lambda r: r.duration, reverse=True)[:SLOWEST]
    if slow:
        lines.append(
            "slowest:  " + ", ".join(f"{r.target} ({r.kind}) {ms(r.duration)}ms" for r in slow)
        )
    refused = [r for r in records if r.refused]
    for r in refused:
        lines.append(f"refused:  {r.target} ({r.kind}): {r.refusal}")
    errors = [r for r in records if r.error and not r.refused]
    for r in errors[:10]:
        lines.append(f"error:    {r.target} ({r.kind}) {r.status or '-'}: {_clip(r.error, 120)}")
    if len(errors) > 10:
        lines.append(f"          … and {len(errors) - 10} more errors")
    return lines


def show_json(
    s: SessionSummary, records: Sequence[Record], audit: Sequence[int | None] = ()
) -> dict[str, Any]:
    requests = [r.to_json() for r in records]
    for request, seq in zip(requests, audit, strict=False):
        request["audit_seq"] = seq
    return {"session": summary_json(s), "requests": requests}
