"""The mitmproxy addons of modgate, in the order a request meets them:

    Settings   options, rules file, store and upstream client (no hooks on flows)
    AuthGate   who is asking (rules.yaml `teams`): 407/401 before anything else looks
    FastHitGate  a cached small hit the stages below answered before, answered again as
               they did while the rules, teams and stored entry are the same (fasthit.py)
    TransparentGate  redirected connections: passed through or refused by name; each
               request routed by its Host (transparent mode, local capture)
    Router     is this a module-proxy request? parse it, or answer 400/404/405
    VcsGate    go's direct fetches from hosts.vcs hosts: which module they are for
    RulesGate  may this host, module or version pass? 403 with the reason; filter lists
    ReadAheadGate  on a client's first .info, fetch the others it will ask for next;
               on a go.mod served, fetch its requirements' go.mod files
    CacheGate  answer it from the store or the upstream chain
    Tracer     record every request, as it finishes, in the trace database
    Auditor    append what was served or refused to the hash-chained audit log (the
               Tracer tells it), and rules reloads, admin actions, start and stop
    MetricsGate  /metrics, /healthz and /readyz on their own address, when asked for

`all_addons()` builds them wired together, behind one mitmproxy addon that calls them
in this order (pipeline.py: mitmproxy would otherwise send every event to each of them);
`addons/modgate_addons.py` is the one-line script for `mitmdump -s` / `mitmweb -s`.
"""

from __future__ import annotations

import time

from mitmproxy import http
from mitmproxy.net.http import status_codes

from modgate.trace.escape import terminal

_REASONS = {code: reason.encode() for code, reason in status_codes.RESPONSES.items()}


def all_addons() -> list[object]:
    from modgate.addons.audit import Auditor
    from modgate.addons.auth import AuthGate
    from modgate.addons.cache import CacheGate
    from modgate.addons.fasthit import FastHitGate
    from modgate.addons.metrics import MetricsGate
    from modgate.addons.pipeline import Pipeline
    from modgate.addons.readahead import ReadAheadGate
    from modgate.addons.router import Router
    from modgate.addons.rules import RulesGate
    from modgate.addons.settings import Settings
    from modgate.addons.trace import Tracer
    from modgate.addons.transparent import TransparentGate
    from modgate.addons.vcs import VcsGate

    settings = Settings()
    router = Router(settings)
    auditor = Auditor()
    tracer = Tracer()
    metrics = MetricsGate(settings, tracer, auditor)
    tracer.observers = (auditor.observe, metrics.observe)
    transparent = TransparentGate(settings, tracer.record_connection)
    rules = RulesGate(settings)
    rules.on_reload = auditor.rules_reloaded
    auth, readahead = AuthGate(settings), ReadAheadGate(settings)
    fast = FastHitGate(settings, auth, readahead, tracer, auditor)
    stages = [
        *(settings, auth, fast, transparent, router, VcsGate(settings), rules),
        *(readahead, CacheGate(settings), tracer, auditor, metrics),
    ]
    # Fail closed: a flow the Router says modgate owns leaves with modgate's answer only.
    return [Pipeline(stages, gated=router.gated)]


def answer(status: int, body: bytes, headers: dict[str, str]) -> http.Response:
    """`http.Response.make(status, body, headers)`, at a third of its cost: the fields
    are encoded once, and the body set without `make`'s content-encoding round trip (a
    cached hit builds one per request)."""
    now = time.time()
    fields = [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers.items()]
    fields.append((b"content-length", b"%d" % len(body)))
    return http.Response(
        b"HTTP/1.1", status, _REASONS.get(status, b""), http.Headers(fields), body, None, now, now
    )


def plain(status: int, message: str, headers: dict[str, str] | None = None) -> http.Response:
    """An error answer the go command prints after "server response:" (text/plain, and
    one line: go stops at the first blank line and keeps at most 8 lines). Escaped for
    the terminal: go drops a body with any non-graphic character in it, so an upstream's
    text quoted here could otherwise hide modgate's reason."""
    line = terminal(" ".join(message.split()))
    return http.Response.make(
        status, f"{line}\n", {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
    )
