"""Answer a cached small hit the pipeline already answered the same way, without asking the
stages again (modgate/fasthit.py says when that is exact); part of modgate's addons
(`all_addons()`: right after AuthGate).

- HTTPS proxy (`requestheaders`): an answer from the memo is set on the flow with what
  the stages left in `flow.metadata` the first time; the later stages see an answered
  flow and return early; the Tracer, the Auditor, metrics and the go.mod read-ahead
  (`response`) run as for any flow.
- GOPROXY endpoint (`endpoint`, called by endpoint.py before it builds a flow): the same
  answer, authenticated here (a token, or a password checked recently: anything slower
  goes through the pipeline), its trace record handed to the Tracer (journalled before
  the answer goes out, as in the `response` hook), its read-ahead to ReadAheadGate.
- `response`: a finished flow the pipeline answered with a fresh immutable hit is kept.

Anything this stage is not sure of (no runtime, a `Via` header, a method other than GET,
the trace or audit log required and failing) goes through the pipeline.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import mode_specs

from modgate.endpoint import FRONT, TARGET_HOST
from modgate.fasthit import Answer, FastHits, Key, replayed, request_size
from modgate.gateway import artifact_key
from modgate.goproxy import Kind, ModRequest
from modgate.teams import Identity

if TYPE_CHECKING:
    from modgate.addons.audit import Auditor
    from modgate.addons.auth import AuthGate
    from modgate.addons.readahead import ReadAheadGate
    from modgate.addons.settings import Settings
    from modgate.addons.trace import Tracer

FAST = "modgate.fast"  # the front end that answered from the memo ("proxy", "endpoint")
ENTRY = "modgate.entry"  # CacheGate: the store entry a hit was served from
KEY, GENERATION = "modgate.fast_key", "modgate.generation"
IDENTITY, TEAM = "modgate.identity", "modgate.team"
# What the stages leave in flow.metadata that the later ones and the Tracer read.
KEPT = ("modgate.url", "modgate.proxy", "modgate.request", "modgate.chain", "modgate.rule",
        "modgate.cache", "modgate.upstream", "modgate.hash")  # fmt: skip


class FastHitGate:
    def __init__(
        self, settings: Settings, auth: AuthGate, readahead: ReadAheadGate, tracer: Tracer,
        auditor: Auditor,
    ) -> None:  # fmt: skip
        self.settings, self.auth, self.readahead = settings, auth, readahead
        self.tracer, self.auditor = tracer, auditor
        self.memo = FastHits()
        self._proxyauth = False  # mitmproxy's own proxyauth: only a flow can ask it
        self._last: tuple[object, ...] | None = None  # the generation last seen

    def configure(self, updated: set[str]) -> None:
        if "proxyauth" in updated:
            self._proxyauth = bool(getattr(ctx.options, "proxyauth", None))

    def _generation(self) -> tuple[object, ...] | None:
        runtime = self.settings.runtime
        if runtime is None:
            return None
        generation = (runtime, self.auth.current())
        if not _same(self._last, generation):
            # Nothing kept under the old one can be answered again: let it (and the
            # runtime it holds on to) go now rather than when each is next asked for.
            self.memo.clear()
            self._last = generation
        return generation

    def _ready(self) -> bool:
        """Whether the records of an answer can be written (or need not be)."""
        return not self.tracer.refusing() and not self.auditor.refusing()

    # --- the HTTPS proxy -----------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        generation = self._generation()
        key = _key(flow)
        if generation is None or key is None:
            return
        flow.metadata[GENERATION], flow.metadata[KEY] = _Opaque(generation), key
        store = generation[0].store  # type: ignore[attr-defined]
        answer = self.memo.get(key, generation, store.held)
        if answer is None or not self._ready():
            return
        flow.metadata.update(answer.meta)
        flow.metadata[FAST] = key[0]
        now = time.time()
        flow.response = http.Response(
            b"HTTP/1.1", answer.status, answer.reason, http.Headers(answer.fields), answer.body,
            None, now, now,
        )  # fmt: skip
        req: ModRequest = answer.meta["modgate.request"]
        if req.kind is Kind.INFO:  # ReadAheadGate.request saw an answered flow
            peer = flow.client_conn.peername
            self.readahead.info_asked(peer[0] if peer else "", req, flow.metadata)

    def response(self, flow: http.HTTPFlow) -> None:
        """Keep what the pipeline answered, when it is a fresh immutable hit."""
        meta, resp = flow.metadata, flow.response
        if FAST in meta or meta.get("modgate.cache") != "hit" or flow.error or resp is None:
            return
        key, held, entry = meta.get(KEY), meta.get(GENERATION), meta.get(ENTRY)
        req: ModRequest | None = meta.get("modgate.request")
        if key is None or held is None or entry is None or req is None:
            return
        generation = held.value
        rule = meta.get("modgate.rule")
        if (
            resp.status_code != 200
            or resp.stream
            or resp.raw_content is None
            or not req.immutable
            or req.kind is Kind.ZIP
            or entry.key != artifact_key(req)
            or "modgate.error" in meta
            or "modgate.blob" in meta
            or (rule is not None and (rule.get("verdict") != "allow" or "hidden" in rule))
            or not _same(self._generation(), generation)  # reloaded meanwhile
            or generation[0].store.held(entry.key) is not entry
        ):
            return
        from modgate.addons.trace import record_of

        record, observed = record_of(flow)
        kept = {k: meta[k] for k in KEPT if k in meta}
        self.memo.put(key, Answer(
            resp.status_code, resp.data.reason, tuple(resp.headers.fields), resp.raw_content,
            entry, generation, record, kept, observed,
        ))  # fmt: skip

    # --- the GOPROXY endpoint --------------------------------------------------------------

    def endpoint(
        self, client: connection.Client, path: bytes, headers: list[tuple[bytes, bytes]],
        start: float, body: int,
    ) -> Answer | None:  # fmt: skip
        """The answer to a GET on the endpoint, recorded, or None: the pipeline's to answer."""
        generation = self._generation()
        if generation is None or self._proxyauth:
            return None
        accept, credentials = [], []
        for name, value in headers:
            lower = name.lower()
            if lower == b"accept-encoding":
                accept.append(value.decode("utf-8", "surrogateescape"))
            elif lower == b"authorization":
                credentials.append(value.decode("utf-8", "surrogateescape"))
            elif lower == b"via":
                return None  # CacheGate's loop check
        identity = team = ""
        auth = generation[1]
        if auth is not None:
            found = auth.authenticate_fast(credentials)  # type: ignore[attr-defined]
            if not isinstance(found, Identity):
                return None  # refused, or a password to check: the pipeline says which
            identity, team = found.name, found.team
            headers = [(k, v) for k, v in headers if k.lower() != b"authorization"]
        text = path.decode("utf-8", "surrogateescape")
        key: Key = ("endpoint", "http", TARGET_HOST, 80, text, ", ".join(accept), team)
        store = generation[0].store  # type: ignore[attr-defined]
        answer = self.memo.get(key, generation, store.held)
        if answer is None or not self._ready():
            return None
        origin, later = self.tracer.origin_of(client)
        peer = client.peername or ("", 0)
        record = replayed(
            answer, start=start, end=time.time(), client=peer[0].removeprefix("::ffff:"),
            client_port=peer[1], bytes_in=request_size(3, len(text), headers, body),
            origin=origin, identity=identity,
        )  # fmt: skip
        meta = {**answer.meta, IDENTITY: identity, TEAM: team, FAST: "endpoint"}
        self.tracer.submit(record, meta, answer.observed, later)
        req: ModRequest = answer.meta["modgate.request"]
        if req.kind is Kind.INFO:  # as ReadAheadGate's hooks would see it
            self.readahead.info_asked(peer[0], req, meta)
        elif req.kind is Kind.MOD:
            self.readahead.mod_asked(peer[0], req)
            encoding = next((v for k, v in answer.fields if k.lower() == b"content-encoding"), b"")
            self.readahead.mod_served(peer[0], meta, answer.body, encoding.decode("latin-1"))
        return answer


def _key(flow: http.HTTPFlow) -> Key | None:
    """The memo's key of a flow, None when it is not one the memo answers."""
    request = flow.request
    if request.method != "GET" or "Via" in request.headers:
        return None
    if flow.metadata.get(FRONT) == "endpoint":
        front = "endpoint"
    elif type(flow.client_conn.proxy_mode) is mode_specs.RegularMode:
        front = "proxy"
    else:
        return None  # transparent, local capture, mitmproxy's own reverse mode: not here
    team = str(flow.metadata.get(TEAM) or "")
    return (front, request.scheme, request.host, request.port, request.path,
            request.headers.get("Accept-Encoding", ""), team)  # fmt: skip


class _Opaque:
    """The generation in flow.metadata, which mitmproxy deep-copies when it saves a flow:
    a copy of the runtime (a store, sockets) is neither possible nor wanted."""

    def __init__(self, value: tuple[object, ...]) -> None:
        self.value = value

    def __deepcopy__(self, memo: object) -> _Opaque:
        return self


def _same(a: tuple[object, ...] | None, b: tuple[object, ...]) -> bool:
    return a is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
