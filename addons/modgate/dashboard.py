"""The dashboard: web pages on the admin API's address, behind the same keys.

    GET /dashboard/login?admin=NAME&ts=T&sig=S  a one-time link (`modgate admin dashboard`)
    GET /dashboard                              live requests, sessions, cache, refusals,
                                                teams, audit
    GET /dashboard/events                       the live view: server-sent events
    GET /dashboard/sessions/ID                  a session's waterfall (trace/waterfall.py)

Logging in keeps the HMAC model. A browser cannot sign each request without holding
the key, where any script on the page could read it; so the key stays with the
`modgate admin` client, which signs a login link: the canonical string of
`GET /dashboard/login?admin=NAME&ts=T` (adminauth), good for LOGIN_WINDOW seconds and
once (the verifier remembers it). Opening it sets a session cookie: random, held in
this process's memory only (a restart logs everyone out), expiring after SESSION_TTL,
HttpOnly (no script reads it, an injected one included) and SameSite=Strict (no other
site can make the browser send it: no cross-site request forgery, and the pages
change nothing anyway). The cookie opens the /dashboard pages only, never /v1: the API
takes signatures alone.

Everything shown that came from outside (module paths, hosts, reasons) is escaped:
server-rendered text through trace/escape.markup, live rows through escape.terminal
on the server and `textContent` in the browser, never as markup. The pages carry a
Content-Security-Policy that runs only their own scripts (a nonce per page).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from modgate import adminauth, cacheadmin
from modgate.admin import NO_STORE, AdminServer, Answer, Call, Route
from modgate.adminauth import Accepted, AdminKey, Refused, Signed
from modgate.trace.escape import markup, terminal
from modgate.trace.record import COLUMNS, Record, from_row

LOGIN_WINDOW = 60  # seconds a login link is good for
SESSION_TTL = 8 * 3600  # a working day
MAX_SESSIONS = 1000
COOKIE = "modgate_session"
LIVE_BACKLOG = 50  # rows the live view starts with
POLL = 0.5  # seconds between looks at the trace database
KEEPALIVE = 15.0
_LOGIN = re.compile(
    r"/dashboard/login\?admin=([A-Za-z0-9._-]+)&ts=([0-9]{1,12})&sig=([0-9a-f]{64})"
)

# A panel another part of modgate fills (teams, the audit log): rows of (name, detail),
# or None while that part is not configured.
Panel = Callable[[], list[tuple[str, str]] | None]


def login_link(url: str, key: AdminKey, now: float | None = None) -> str:
    """A link that logs a browser in as `key`'s administrator, once, within LOGIN_WINDOW."""
    ts = int(time.time() if now is None else now)
    target = f"/dashboard/login?admin={quote(key.name)}&ts={ts}"
    return f"{url.rstrip('/')}{target}&sig={adminauth.sign(key.secret, 'GET', target, ts)}"


@dataclass(frozen=True)
class _Session:
    admin: str
    scopes: frozenset[str]
    expires: float


class Dashboard:
    def __init__(
        self, server: AdminServer, teams: Panel | None = None, audit: Panel | None = None
    ) -> None:
        self.server = server
        self.teams = teams  # the teams module's, at merge
        self.audit = audit  # the audit log's, at merge
        self._sessions: dict[str, _Session] = {}

    def install(self) -> None:
        self.server.authenticate_session = self.authenticate
        self.server.add_routes([
            Route("GET", "/dashboard/login", "dashboard.login", None, self.login, auth="none"),
            Route("GET", "/dashboard", "dashboard", "read", self.page, auth="session"),
            Route("GET", "/dashboard/events", "dashboard.events", "read", self.events,
                  auth="session"),
            Route("GET", "/dashboard/sessions/{id}", "dashboard.session", "read", self.session,
                  auth="session"),
        ])  # fmt: skip

    # --- logging in ----------------------------------------------------------------------

    async def login(self, call: Call) -> Answer | web.StreamResponse:
        request = call.request
        m = _LOGIN.fullmatch(request.raw_path)
        verdict: Accepted | Refused = Refused("not a login link (modgate admin dashboard)")
        if m is not None:
            admin, ts, sig = m.group(1), int(m.group(2)), m.group(3)
            target = request.raw_path.rpartition("&sig=")[0]
            if ts < time.time() - LOGIN_WINDOW:
                verdict = Refused(f"login link older than {LOGIN_WINDOW}s")
            else:
                verdict = self.server.verifier.check_signed(
                    Signed(admin, m.group(2), sig), "GET", target, b"", "read"
                )
        if isinstance(verdict, Refused):
            return self.server.refuse(request, m.group(1) if m else "", verdict)
        now = time.time()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
        if len(self._sessions) >= MAX_SESSIONS:
            return Answer(503, "too many dashboard sessions; try again later")
        token = secrets.token_urlsafe(32)
        self._sessions[token] = _Session(verdict.admin, verdict.scopes, now + SESSION_TTL)
        response = web.HTTPSeeOther("/dashboard", headers=NO_STORE)
        response.set_cookie(COOKIE, token, max_age=SESSION_TTL, path="/dashboard",
                            httponly=True, samesite="Strict")  # fmt: skip
        return response

    def authenticate(self, request: web.Request) -> Accepted | Refused:
        token = request.cookies.get(COOKIE, "")
        session = self._sessions.get(token) if token else None
        if session is None:
            return Refused("no dashboard session (log in with `modgate admin dashboard`)")
        if session.expires <= time.time():
            self._sessions.pop(token, None)
            return Refused(f"dashboard session of {session.admin!r} expired")
        if "read" not in session.scopes:
            return Refused(f"{session.admin!r} lacks the 'read' scope")
        return Accepted(session.admin, session.scopes)

    # --- pages -----------------------------------------------------------------------------

    def _html(self, text: str, nonce: str) -> web.Response:
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        headers = {**NO_STORE, "Content-Security-Policy": csp, "Referrer-Policy": "no-referrer"}
        return web.Response(text=text, content_type="text/html", headers=headers)

    async def page(self, call: Call) -> web.StreamResponse:
        backend = self.server.backend
        overview = await asyncio.to_thread(_overview, backend.cache_dir, backend.trace_db)
        nonce = secrets.token_urlsafe(16)
        return self._html(self._render(call.admin, overview, nonce), nonce)

    async def session(self, call: Call) -> Answer | web.StreamResponse:
        from modgate.trace.store import TraceDB
        from modgate.trace.waterfall import html, layout

        ref = call.params["id"]

        def work() -> str:
            db = TraceDB(self.server.backend.trace_db, create=False)
            try:
                summary = db.session(db.resolve(ref))
                records = db.records(summary.id)
            finally:
                db.close()
            return html(layout(summary, records), records)

        nonce = secrets.token_urlsafe(16)
        text = (await asyncio.to_thread(work)).replace("<script", f'<script nonce="{nonce}"')
        return self._html(text, nonce)

    async def events(self, call: Call) -> web.StreamResponse:
        """The trace's new rows, as they are committed, by rowid: `Last-Event-ID` (a
        browser sends it when it reconnects) or the last LIVE_BACKLOG rows."""
        request = call.request
        db_path = self.server.backend.trace_db
        last = request.headers.get("Last-Event-ID", "")
        after = int(last) if last.isdigit() else await asyncio.to_thread(_last_id, db_path)
        if not last.isdigit():
            after = max(0, after - LIVE_BACKLOG)
        response = web.StreamResponse(headers={
            **NO_STORE, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
        })  # fmt: skip
        await response.prepare(request)
        token = request.cookies.get(COOKIE, "")
        idle = 0.0
        with contextlib.suppress(ConnectionResetError):
            while self._live(token):
                rows = await asyncio.to_thread(_rows_after, db_path, after)
                for record in rows:
                    after = record.id
                    data = json.dumps(live_row(record))
                    await response.write(
                        f"id: {record.id}\nevent: request\ndata: {data}\n\n".encode()
                    )
                idle = 0.0 if rows else idle + POLL
                if idle >= KEEPALIVE:
                    await response.write(b": keep-alive\n\n")
                    idle = 0.0
                await asyncio.sleep(POLL)
        return response

    def _live(self, token: str) -> bool:
        session = self._sessions.get(token)
        return not self.server.stopping and session is not None and session.expires > time.time()

    def _render(self, admin: str, o: _Overview, nonce: str) -> str:
        return _PAGE.format(
            admin=markup(admin),
            nonce=nonce,
            sessions=_sessions_table(o.sessions),
            entries=o.entries,
            size=_mib(o.size),
            limit=_mib(o.limit),
            ratio="-" if o.hit_ratio is None else f"{o.hit_ratio:.0%}",
            ratio_chart=_chart(o.ratio_series, "hit ratio", percent=True),
            size_chart=_chart(o.size_series, "bytes stored", percent=False),
            refusals=_refusals_table(o.refusals),
            teams=_panel(self.teams, "teams are not configured"),
            audit=_panel(self.audit, "the audit log is not configured"),
            script=_SCRIPT,
        )


def live_row(r: Record) -> dict[str, Any]:
    """One row of the live view: display text only, escaped for any terminal-like sink
    (the browser shows it as text, never as markup)."""
    from modgate.trace.waterfall import outcome

    return {
        "id": r.id,
        "time": time.strftime("%H:%M:%S", time.localtime(r.start)),
        "client": terminal(r.client),
        "method": terminal(r.method),
        "target": terminal(r.target),
        "kind": terminal(r.kind),
        "status": r.status,
        "outcome": outcome(r),
        "ms": round(r.duration * 1000, 1),
        "bytes": r.bytes_out or 0,
        "why": terminal(r.refusal or r.error),
    }


# --- what the page shows -------------------------------------------------------------------


@dataclass(frozen=True)
class _Overview:
    sessions: list[Any]  # SessionSummary
    entries: int
    size: int
    limit: int
    hit_ratio: float | None
    ratio_series: list[tuple[float, float]]
    size_series: list[tuple[float, float]]
    refusals: list[Record]


_SELECT = ", ".join(f'"{c}"' for c in COLUMNS)


def _connect(db: Path) -> sqlite3.Connection | None:
    if not db.is_file():
        return None
    try:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return None


def _last_id(db: Path) -> int:
    conn = _connect(db)
    if conn is None:
        return 0
    try:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM requests").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _rows_after(db: Path, after: int, limit: int = 500) -> list[Record]:
    conn = _connect(db)
    if conn is None:
        return []
    try:
        rows = conn.execute(
            f"SELECT {_SELECT} FROM requests WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return [from_row(row) for row in rows]


def _overview(cache_dir: Path, trace_db: Path, now: float | None = None) -> _Overview:
    from modgate.store import DiskStore
    from modgate.trace.store import TraceDB, TraceError

    now = time.time() if now is None else now
    sessions: list[Any] = []
    refusals: list[Record] = []
    ratio: list[tuple[float, float]] = []
    with contextlib.suppress(TraceError):
        db = TraceDB(trace_db, create=False)
        try:
            sessions = list(reversed(db.sessions(20)))
        finally:
            db.close()
    if (conn := _connect(trace_db)) is not None:
        try:
            refusals = [from_row(r) for r in conn.execute(
                f"SELECT {_SELECT} FROM requests WHERE refused = 1 ORDER BY id DESC LIMIT 50"
            )]  # fmt: skip
            ratio = _ratio_series(conn, now)
        except sqlite3.Error:
            pass
        finally:
            conn.close()
    found: list[cacheadmin.Item] = []
    limit = 0
    if (cache_dir / "artifacts" / "cache.db").is_file():
        store = DiskStore(cache_dir / "artifacts", size_limit=None)
        try:
            found = list(cacheadmin.items(store))
            limit = store.size_limit
        finally:
            store.close()
    stats = cacheadmin.stats(found)
    return _Overview(
        sessions, stats.entries, stats.size, limit, cacheadmin.hit_ratio(trace_db), ratio,
        _size_series(found), refusals,
    )  # fmt: skip


def _ratio_series(
    conn: sqlite3.Connection, now: float, span: float = 24 * 3600, buckets: int = 48
) -> list[tuple[float, float]]:
    """(bucket start, share from the cache) of module requests over the last `span`."""
    width = span / buckets
    rows = conn.execute(
        "SELECT CAST((start - ?) / ? AS INTEGER), count(*), "
        "sum(cache IN ('hit', 'negative', 'stale')) FROM requests "
        "WHERE kind IN ('list','info','mod','zip','latest') AND start >= ? GROUP BY 1 ORDER BY 1",
        (now - span, width, now - span),
    ).fetchall()
    return [(now - span + b * width, (hits or 0) / n) for b, n, hits in rows if n]


def _size_series(found: Sequence[cacheadmin.Item]) -> list[tuple[float, float]]:
    """(time, bytes) of what is stored now, by when it was stored."""
    total = 0.0
    out = []
    for i in sorted(found, key=lambda i: i.stored_at):
        total += i.size
        out.append((i.stored_at, total))
    if len(out) > 200:  # a point per pixel is plenty
        step = len(out) / 200
        out = [out[int(k * step)] for k in range(200)] + [out[-1]]
    return out


# --- HTML ----------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _sessions_table(sessions: Sequence[Any]) -> str:
    if not sessions:
        return "<p class=muted>No sessions traced yet.</p>"
    rows = []
    for s in sessions:
        ratio = "-" if s.hit_ratio is None else f"{s.hit_ratio:.0%}"
        rows.append(
            f'<tr><td><a href="/dashboard/sessions/{s.id}">{s.id}</a></td>'
            f"<td>{markup(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.started)))}</td>"
            f"<td>{markup(s.client)}</td><td>{markup(s.label)}</td><td>{s.requests}</td>"
            f"<td>{s.versions}</td><td>{ratio}</td><td>{s.refused}</td><td>{s.errors}</td></tr>"
        )
    head = (
        "<tr><th>ID</th><th>started</th><th>client</th><th>label</th><th>requests</th>"
        "<th>versions</th><th>hits</th><th>refused</th><th>errors</th></tr>"
    )
    return f'<table id="sessions">{head}{"".join(rows)}</table>'


def _refusals_table(refusals: Sequence[Record]) -> str:
    if not refusals:
        return '<p class=muted id="refusals">No refusals.</p>'
    rows = [
        f"<tr><td>{markup(time.strftime('%H:%M:%S', time.localtime(r.start)))}</td>"
        f"<td>{markup(r.client)}</td><td>{markup(r.target)}</td><td>{r.status}</td>"
        f"<td>{markup(r.rule)}</td><td>{markup(r.refusal)}</td></tr>"
        for r in refusals
    ]
    head = (
        "<tr><th>time</th><th>client</th><th>what</th><th>status</th><th>rule</th><th>why</th></tr>"
    )
    return f'<table id="refusals">{head}{"".join(rows)}</table>'


def _panel(panel: Panel | None, absent: str) -> str:
    rows = panel() if panel is not None else None
    if rows is None:
        return f"<p class=muted>{markup(absent)}</p>"
    cells = "".join(f"<tr><td>{markup(a)}</td><td>{markup(b)}</td></tr>" for a, b in rows)
    return f"<table>{cells}</table>"


def _chart(points: Sequence[tuple[float, float]], what: str, percent: bool) -> str:
    """A small line chart as inline SVG: no script, nothing fetched."""
    w, h, pad = 420, 120, 4
    if len(points) < 2:
        return f"<p class=muted>Not enough data for {markup(what)} yet.</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1
    top = 1.0 if percent else max(ys) or 1
    coords = " ".join(
        f"{pad + (x - x0) / ((x1 - x0) or 1) * (w - 2 * pad):.1f},"
        f"{h - pad - y / top * (h - 2 * pad):.1f}"
        for x, y in points
    )
    label = "100%" if percent else _mib(int(top))
    first = time.strftime("%m-%d %H:%M", time.localtime(x0))
    last = time.strftime("%m-%d %H:%M", time.localtime(x1))
    return (
        f'<svg width="{w}" height="{h + 16}" role="img" aria-label="{markup(what)}">'
        f'<rect width="{w}" height="{h}" fill="#f6f8fa"/>'
        f'<polyline fill="none" stroke="#2f6fde" stroke-width="2" points="{coords}"/>'
        f'<text x="{pad}" y="12" font-size="10">{label}</text>'
        f'<text x="{pad}" y="{h + 12}" font-size="10">{first}</text>'
        f'<text x="{w - pad}" y="{h + 12}" font-size="10" text-anchor="end">{last}</text></svg>'
    )


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>modgate dashboard</title>
<style>
body{{margin:0;font:13px system-ui,sans-serif;color:#1d2430;background:#fff}}
header{{padding:10px 16px;background:#1d2430;color:#fff;display:flex;gap:16px}}
main{{padding:8px 16px;display:grid;grid-template-columns:1fr 1fr;gap:8px 24px}}
section{{min-width:0}} section.wide{{grid-column:1 / 3}}
h2{{font-size:14px;margin:12px 0 6px}}
table{{border-collapse:collapse;width:100%;font:12px DejaVu Sans Mono,Menlo,monospace}}
td,th{{text-align:left;padding:2px 6px;border-bottom:1px solid #e3e7ed;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis;max-width:32em}}
.muted{{color:#5c6675}} .hit{{color:#2e9d4b}} .miss{{color:#2f6fde}}
.refused,.error{{color:#9b1c1c;font-weight:bold}} .stale{{color:#d99a00}}
#live-wrap{{max-height:360px;overflow:auto}}
</style></head><body>
<header><b>modgate</b><span>signed in as {admin}</span>
<span id="status" class="muted">live: connecting</span></header>
<main>
<section class="wide"><h2>Live requests <span id="count" class="muted">0</span></h2>
<div id="live-wrap"><table id="live"><thead><tr><th>time</th><th>client</th><th>method</th>
<th>what</th><th>kind</th><th>status</th><th>outcome</th><th>ms</th><th>bytes</th><th>why</th>
</tr></thead><tbody></tbody></table></div></section>
<section><h2>Cache</h2><p id="cache">{entries} entries, {size} of {limit}; hit ratio {ratio}</p>
<h2>Hit ratio, last 24 hours</h2>{ratio_chart}
<h2>Stored, by when it was stored</h2>{size_chart}</section>
<section><h2>Sessions</h2>{sessions}</section>
<section class="wide"><h2>Refusals</h2>{refusals}</section>
<section><h2>Teams</h2>{teams}</section>
<section><h2>Audit log</h2>{audit}</section>
</main>
<script nonce="{nonce}">{script}</script>
</body></html>
"""

# Rows are built with textContent only: what the trace holds is shown, never parsed.
_SCRIPT = """
(function () {
  var body = document.querySelector('#live tbody');
  var count = document.getElementById('count');
  var status = document.getElementById('status');
  var n = 0;
  var fields = ['time', 'client', 'method', 'target', 'kind', 'status', 'outcome', 'ms',
                'bytes', 'why'];
  var source = new EventSource('/dashboard/events');
  source.onopen = function () { status.textContent = 'live'; };
  source.onerror = function () { status.textContent = 'live: reconnecting'; };
  source.addEventListener('request', function (e) {
    var r = JSON.parse(e.data);
    var tr = document.createElement('tr');
    tr.className = 'row ' + r.outcome;
    fields.forEach(function (f) {
      var td = document.createElement('td');
      td.textContent = String(r[f]);
      if (f === 'outcome') td.className = r.outcome;
      tr.appendChild(td);
    });
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
    n += 1;
    count.textContent = String(n);
  });
})();
"""
