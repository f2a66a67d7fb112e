"""The admin API: JSON over HTTP on its own address, every request signed
(modgate/adminauth.py). No mitmproxy here: `Backend` is what the running modgate lends
it (modgate/addons/admin.py), and the cache work is cacheadmin's, as for `modgate cache`.

    GET  /v1/whoami                            any key  who signed, with which scopes
    GET  /v1/cache/stats                       read     entries, bytes by kind, hit ratio
    GET  /v1/cache/items?pattern=GLOB&limit=N  read     what is stored (cacheadmin.Item)
    POST /v1/cache/evict   {"target": "M[@V]"} cache    a module's or a version's answers
    POST /v1/cache/purge   {"pattern": "GLOB"} cache    every module answer matching GLOB
    POST /v1/cache/verify  {"remove": false}   cache    re-hash everything stored
    GET  /v1/rules                             read     the rules file in force
    POST /v1/rules/reload                      rules    apply the rules file now
    GET  /v1/trace/sessions?limit=N            read     `modgate trace ls`
    GET  /v1/trace/sessions/ID                 read     `modgate trace show ID`
    /v1/teams/...                              teams    token management (teams_api.py)

Every answer, errors included, is one envelope: {"code": HTTP status, "message": text,
"data": value or null}. Authentication comes before routing: without a valid signature
every path, known or not, answers 401 with the same message; the reason is logged, and
passed to `on_action`. After each request that changes something, and each refused
one, `on_action(Action)` is called (who, what, arguments, result, time): the audit
log's hook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from modgate import adminauth, cacheadmin
from modgate.adminauth import Accepted, AdminKey, Refused, Verifier
from modgate.errors import ModgateError
from modgate.trace.escape import terminal
from modgate.trace.store import TraceError

log = logging.getLogger("modgate")

MAX_BODY = 1 << 20
UNAUTHORIZED = "unauthorized: sign the request with an admin key (modgate admin --help)"
DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class Action:
    """One request that changed something, or was refused: the audit log's entry."""

    who: str  # the administrator ("" when not even a name was given)
    what: str  # the route's name ("cache.evict"), or METHOD PATH when refused
    arguments: Mapping[str, Any]
    result: str  # "ok", "failed: ...", "refused: <reason>"
    time: float


@dataclass(frozen=True)
class Answer:
    status: int
    message: str
    data: Any = None


@dataclass(frozen=True)
class Call:
    """A request a route's handler gets: authenticated, its JSON body parsed."""

    admin: str
    scopes: frozenset[str]
    query: Mapping[str, str]
    params: Mapping[str, str]  # from the route's {name} parts
    body: Any  # the JSON body, or None
    request: web.Request


Handler = Callable[[Call], Awaitable[Answer | web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "/v1/trace/sessions/{id}"
    name: str  # "trace.session": what `on_action` calls it
    scope: str | None  # None: any valid key
    handler: Handler
    changes: bool = False  # reported to on_action
    # "signed": X-Signature (the API); "session": the dashboard's cookie (dashboard.py);
    # "none": the dashboard's one-time login link, which carries its own signature.
    auth: str = "signed"
    regex: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        rx = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.pattern))
        object.__setattr__(self, "regex", re.compile(rx + "$"))


@dataclass(frozen=True)
class RulesState:
    path: str
    text: str | None  # None: no file, or unreadable
    summary: str


class Backend(Protocol):
    """What the running modgate lends the admin API."""

    @property
    def cache_dir(self) -> Path: ...

    @property
    def trace_db(self) -> Path: ...

    def rules(self) -> RulesState: ...

    def reload_rules(self) -> tuple[bool, str]: ...


def envelope(answer: Answer, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"code": answer.status, "message": answer.message, "data": answer.data}
    return web.json_response(
        body, status=answer.status, headers={**NO_STORE, **(headers or {})}, dumps=_dumps
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class AdminServer:
    def __init__(
        self,
        backend: Backend,
        keys: Callable[[], Mapping[str, AdminKey]],
        on_action: Callable[[Action], None] | None = None,
    ) -> None:
        self.backend = backend
        self.verifier = Verifier(keys)
        self.on_action = on_action
        self.routes: list[Route] = []
        self.add_routes(api_routes(self))
        self.authenticate_session: Callable[[web.Request], Accepted | Refused] = lambda _: Refused(
            "no dashboard"
        )
        self._runner: web.AppRunner | None = None
        self.stopping = False  # long answers (the dashboard's live view) end when set

    def add_routes(self, routes: Iterable[Route]) -> None:
        """Add routes (the teams module adds /v1/teams/..., the dashboard its pages)."""
        self.routes.extend(routes)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, sock: socket.socket) -> None:
        self.stopping = False
        # A live view still open must not hold modgate's stop up for long.
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self.stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- one request ---------------------------------------------------------------------

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        allowed = []
        for route in self.routes:
            if m := route.regex.match(path):
                if route.method == method or (route.method == "GET" and method == "HEAD"):
                    return route, m.groupdict(), []
                allowed.append(route.method)
        return None, {}, allowed

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._answer(request)
        except web.HTTPException as e:  # aiohttp's own: a body over MAX_BODY
            return envelope(Answer(e.status, e.reason))
        except Exception:
            log.exception("modgate: admin API: %s %s failed", request.method, request.path)
            return envelope(Answer(500, "internal error; see modgate's log"))

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        route, params, allowed = self._match(request.method, request.path)
        body = await request.read()
        who = request.headers.get(adminauth.ADMIN, "")
        if route is not None and route.auth == "session":
            verdict = self.authenticate_session(request)
        elif route is not None and route.auth == "none":
            verdict = Accepted("", frozenset())
        else:
            scope = route.scope if route is not None else None
            verdict = self.verifier.check(
                request.method, request.raw_path, request.headers.items(), body, scope
            )
        if isinstance(verdict, Refused):
            return self.refuse(request, who, verdict)
        if route is None:
            if allowed:
                return envelope(
                    Answer(405, f"{request.method} not allowed here: {', '.join(allowed)}"),
                    {"Allow": ", ".join(sorted(set(allowed)))},
                )
            return envelope(Answer(404, f"no such endpoint: {request.path}"))
        try:
            parsed = json.loads(body) if body else None
        except ValueError as e:
            return envelope(Answer(400, f"the body is not JSON: {e}"))
        call = Call(verdict.admin, verdict.scopes, request.query, params, parsed, request)
        arguments = {**params, **request.query, **(parsed if isinstance(parsed, dict) else {})}
        try:
            answer = await route.handler(call)
        except TraceError as e:
            answer = Answer(404, str(e))
        except ModgateError as e:
            answer = Answer(400, str(e))
        except Exception:
            log.exception("modgate: admin API: %s failed", route.name)
            answer = Answer(500, "internal error; see modgate's log")
        if route.changes:
            result = "ok" if isinstance(answer, Answer) and answer.status < 400 else "failed"
            if isinstance(answer, Answer) and answer.status >= 400:
                result = f"failed: {answer.message}"
            self._report(verdict.admin, route.name, arguments, result)
        return envelope(answer) if isinstance(answer, Answer) else answer

    def refuse(self, request: web.Request, who: str, verdict: Refused) -> web.Response:
        """The one answer to every refused request; the reason goes to the log and the hook."""
        log.warning(
            "modgate: admin API: refused %s %s from %s: %s",
            request.method, terminal(request.raw_path), request.remote, verdict.reason,
        )  # fmt: skip
        self._report(who, f"{request.method} {request.path}", {}, f"refused: {verdict.reason}")
        return envelope(Answer(401, UNAUTHORIZED))

    def _report(self, who: str, what: str, arguments: Mapping[str, Any], result: str) -> None:
        action = Action(who, what, dict(arguments), result, time.time())
        log.info("modgate: admin %s: %s %s: %s", who or "?", what, _args(arguments), result)
        if self.on_action is not None:
            try:
                self.on_action(action)
            except Exception:
                log.exception("modgate: admin API: the on_action hook failed")


def _args(arguments: Mapping[str, Any]) -> str:
    return terminal(json.dumps(arguments, sort_keys=True)) if arguments else ""


# --- the API's routes ------------------------------------------------------------------------


def _limit(query: Mapping[str, str]) -> int:
    text = query.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 0 < int(text) <= 100_000:
        raise ModgateError(f"limit={text!r}: a number from 1 to 100000")
    return int(text)


def _string(body: Any, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise ModgateError(f'give {{"{name}": "..."}} in a JSON body')
    return value


def api_routes(server: AdminServer) -> list[Route]:
    backend = server.backend

    def store() -> Any:
        from modgate.store import DiskStore

        directory = backend.cache_dir / "artifacts"
        return DiskStore(directory, size_limit=None)

    async def whoami(call: Call) -> Answer:
        return Answer(200, "ok", {"admin": call.admin, "scopes": sorted(call.scopes)})

    async def cache_stats(call: Call) -> Answer:
        def work() -> dict[str, Any]:
            s = store()
            try:
                stats = cacheadmin.stats(cacheadmin.items(s))
                limit = s.size_limit
            finally:
                s.close()
            hits = cacheadmin.hit_ratio(backend.trace_db)
            return {**asdict(stats), "size_limit": limit, "hit_ratio": hits}

        return Answer(200, "ok", await asyncio.to_thread(work))

    async def cache_items(call: Call) -> Answer:
        limit = _limit(call.query)

        def work() -> list[dict[str, Any]]:
            s = store()
            try:
                found = cacheadmin.matching(cacheadmin.items(s), call.query.get("pattern", ""))
            finally:
                s.close()
            found.sort(key=lambda i: (i.module, i.version, i.kind))
            return [asdict(i) for i in found[:limit]]

        items = await asyncio.to_thread(work)
        return Answer(200, f"{len(items)} items", items)

    async def remove(
        choose: Callable[[list[cacheadmin.Item]], list[cacheadmin.Item]],
    ) -> tuple[int, int]:
        """Remove what `choose` picks of the stored items: (entries, bytes)."""

        def work() -> tuple[int, int]:
            s = store()
            try:
                gone = choose(list(cacheadmin.items(s)))
                return s.remove(i.key for i in gone), sum(i.size for i in gone)
            finally:
                s.close()

        return await asyncio.to_thread(work)

    async def cache_evict(call: Call) -> Answer:
        target = _string(call.body, "target")
        removed, size = await remove(lambda found: cacheadmin.evictable(found, target))
        if not removed:
            return Answer(404, f"nothing stored for {target}", {"removed": 0, "bytes": 0})
        return Answer(
            200,
            f"evicted {removed} entries of {target}; fetched and checked again at their next "
            "request",
            {"removed": removed, "bytes": size},
        )

    async def cache_purge(call: Call) -> Answer:
        pattern = _string(call.body, "pattern")
        removed, size = await remove(lambda found: cacheadmin.matching(found, pattern))
        return Answer(
            200,
            f"purged {removed} module answers matching {pattern} (checksum-database "
            "lookups and tiles kept)",
            {"removed": removed, "bytes": size},
        )

    async def cache_verify(call: Call) -> Answer:
        remove = bool(call.body.get("remove")) if isinstance(call.body, dict) else False

        def work() -> cacheadmin.Rechecked:
            s = store()
            try:
                done = cacheadmin.recheck_all(s)
                if remove:
                    for bad in done.bad:
                        s.delete(bad.key)
                return done
            finally:
                s.close()

        done = await asyncio.to_thread(work)
        removed = f", removed {len(done.bad)}" if remove and done.bad else ""
        return Answer(
            200 if not done.bad else 409,
            f"checked {done.checked} entries: {len(done.bad)} bad{removed}",
            {"checked": done.checked, "bytes": done.size, "bad": [asdict(b) for b in done.bad]},
        )

    async def rules(call: Call) -> Answer:
        state = backend.rules()
        return Answer(200, state.summary, asdict(state))

    async def rules_reload(call: Call) -> Answer:
        ok, message = backend.reload_rules()
        return Answer(200 if ok else 409, message, asdict(backend.rules()))

    async def sessions(call: Call) -> Answer:
        from modgate.trace.report import summary_json
        from modgate.trace.store import TraceDB

        limit = _limit(call.query) if "limit" in call.query else 20

        def work() -> list[dict[str, Any]]:
            db = TraceDB(backend.trace_db, create=False)
            try:
                return [summary_json(s) for s in db.sessions(limit)]
            finally:
                db.close()

        found = await asyncio.to_thread(work)
        return Answer(200, f"{len(found)} sessions", found)

    async def session(call: Call) -> Answer:
        from modgate.trace.report import show_json
        from modgate.trace.store import TraceDB

        ref = call.params["id"]

        def work() -> dict[str, Any]:
            db = TraceDB(backend.trace_db, create=False)
            try:
                summary = db.session(db.resolve(ref))
                return show_json(summary, db.records(summary.id))
            finally:
                db.close()

        return Answer(200, "ok", await asyncio.to_thread(work))

    return [
        Route("GET", "/v1/whoami", "whoami", None, whoami),
        Route("GET", "/v1/cache/stats", "cache.stats", "read", cache_stats),
        Route("GET", "/v1/cache/items", "cache.items", "read", cache_items),
        Route("POST", "/v1/cache/evict", "cache.evict", "cache", cache_evict, changes=True),
        Route("POST", "/v1/cache/purge", "cache.purge", "cache", cache_purge, changes=True),
        Route("POST", "/v1/cache/verify", "cache.verify", "cache", cache_verify, changes=True),
        Route("GET", "/v1/rules", "rules", "read", rules),
        Route("POST", "/v1/rules/reload", "rules.reload", "rules", rules_reload, changes=True),
        Route("GET", "/v1/trace/sessions", "trace.sessions", "read", sessions),
        Route("GET", "/v1/trace/sessions/{id}", "trace.session", "read", session),
    ]
