"""modgate's addons as one mitmproxy addon, which calls them in order, and fails closed.

mitmproxy hands every event to every addon it holds, and once more as `update` after
each flow event. Each delivery costs a generator, a getattr, a context manager and a
call per addon, whether the addon answers the event or not: about 2.3 µs, eight or more
times per request. With modgate's six stages registered one by one, that was a tenth of
the CPU of a cached hit (scripts/bench, issue 6).

So mitmproxy holds one `Pipeline`. For each hook that some stage answers, the pipeline
has a method that calls just those stages, in the order they were given; for the others
it has no method, and mitmproxy passes it by.

**Fail closed.** mitmproxy's own policy for an addon's exception is to log it and carry
on; a flow no addon answered is then forwarded to its origin, and the client gets the
origin's bytes, unchecked. For a gate that is fail-open, so the pipeline owns one rule
instead of trusting every stage to keep it:

- a stage that raises in a flow hook that still decides the answer (`http_connect`,
  `requestheaders`, `request`, `responseheaders`, `response`) leaves the flow answered
  with `502 modgate: internal error …; not served` (a streamed body is killed instead),
  logged with its traceback and recorded in `flow.metadata["modgate.error"]`; the later
  stages still run, so the trace records the error;
- a flow the gate owns (`gated(flow)`: a module proxy's or checksum database's host, the
  GOPROXY endpoint) that leaves the `request` hook with no answer and not handed to
  modgate's own file server (`modgate.blob`) is answered with a 502 the same way; its
  request body is never streamed to an origin before that check.

AddonHalt and OptionsError go up to mitmproxy (a bad `--set` still stops `modgate run`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mitmproxy import exceptions, hooks, http

from modgate.addons import plain
from modgate.endpoint import FRONT

log = logging.getLogger("modgate")
T = TypeVar("T")

# Hooks after which mitmproxy sends what the flow holds: an error there must not let an
# unanswered or half-answered flow through.
ANSWERING = frozenset({"http_connect", "requestheaders", "request", "responseheaders", "response"})
BLOB = "modgate.blob"  # CacheGate pointed the flow at modgate's own loopback file server


def _never(flow: http.HTTPFlow) -> bool:
    return False


class Pipeline:
    name = "modgate"  # what ctx.master.addons.get() finds it by

    def __init__(
        self, stages: Sequence[object], gated: Callable[[http.HTTPFlow], bool] = _never
    ) -> None:
        self.stages = tuple(stages)
        self.gated = gated
        for hook in sorted(hook_names()):
            handlers = [getattr(s, hook) for s in self.stages if callable(getattr(s, hook, None))]
            if handlers or (hook in ("requestheaders", "request") and gated is not _never):
                setattr(self, hook, _dispatcher(hook, handlers, self._closing(hook)))

    def stage(self, kind: type[T]) -> T:
        """The stage of type `kind`."""
        for s in self.stages:
            if isinstance(s, kind):
                return s
        raise LookupError(f"no {kind.__name__} in the pipeline")

    def _closing(self, hook: str) -> Callable[[Any], None] | None:
        """What runs after every stage of `hook`: the check that a gated flow has an
        answer modgate made (see the module docstring)."""
        if hook == "requestheaders":
            return self._no_request_stream
        if hook == "request":
            return self._answered
        if hook == "response":
            return _head_only
        return None

    def _no_request_stream(self, flow: http.HTTPFlow) -> None:
        if flow.request.stream and self._owns(flow):
            # A streamed request body goes to the origin before the `request` hook, and
            # with it the connection: no gated request travels before it is answered.
            flow.request.stream = False

    def _answered(self, flow: http.HTTPFlow) -> None:
        unanswered = flow.response is None and flow.error is None and BLOB not in flow.metadata
        if unanswered and self._owns(flow):
            internal_error(flow, "no stage answered this request")

    def _owns(self, flow: http.HTTPFlow) -> bool:
        try:
            return self.gated(flow)
        except Exception as e:  # cannot tell: it is ours, and so is the error
            _failed(f"{getattr(self.gated, '__qualname__', self.gated)}", e)
            return True

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(type(s).__name__ for s in self.stages)})"


def _head_only(flow: http.HTTPFlow) -> None:
    """A HEAD's answer is its head alone (RFC 9110 §9.3.2). mitmproxy sends whatever body
    an answer a stage made holds (a refusal's text), and the client, expecting none,
    reads it as the start of its next answer on the connection. The head, Content-Length
    included, stays as made. The GOPROXY endpoint's server writes a HEAD's head itself
    (from the body GET would get), so its flows keep their body."""
    response = flow.response
    if flow.request.method != "HEAD" or FRONT in flow.metadata:  # the endpoint's own HEAD
        return
    if response is not None and not response.stream and response.raw_content:
        response.raw_content = b""


def hook_names() -> frozenset[str]:
    """Every event mitmproxy can send. Hooks register as their modules load, so load
    every module that defines them."""
    import mitmproxy.addonmanager  # noqa: F401  load
    import mitmproxy.log  # noqa: F401  add_log
    import mitmproxy.proxy.layers  # noqa: F401  http, tcp, udp, tls, dns, websocket, quic
    import mitmproxy.proxy.server_hooks  # noqa: F401  client and server connections

    return frozenset(hooks.all_hooks)


def internal_error(flow: http.HTTPFlow, why: str) -> None:
    """Answer `flow` with modgate's own 502, whatever it held: nothing unchecked leaves.

    A response whose body is still to come from a server (the `responseheaders` hook),
    or is streamed to the client, cannot be swapped for another: mitmproxy would fill
    the new one with the server's body, or has sent part of it. Such a flow is cut."""
    message = f"internal error: {why}; not served"
    flow.metadata["modgate.error"] = message
    response = flow.response
    if response is not None and (response.stream or response.raw_content is None):
        if flow.killable:
            flow.kill()
        return
    flow.response = plain(502, f"modgate: {message}")


def _dispatcher(
    hook: str, handlers: list[Callable[..., Any]], closing: Callable[[Any], None] | None
) -> Callable[..., Any]:
    # mitmproxy calls a hook from synchronous code too (load, configure) and refuses a
    # coroutine function there: the dispatcher is async only if some handler is. The two
    # loops are alike on purpose: a shared context manager for the error handling made
    # every cached hit ~0.1 ms slower (measured A/B, scripts/bench's hits).
    answering = hook in ANSWERING
    if not any(inspect.iscoroutinefunction(h) for h in handlers):

        def call(*args: Any) -> None:
            for handler in handlers:
                try:
                    handler(*args)
                except (exceptions.AddonHalt, exceptions.OptionsError):
                    raise
                except Exception as e:
                    _stage_failed(handler, e, args, answering)
            if closing is not None:
                closing(*args)

        call.__name__ = hook
        return call

    async def acall(*args: Any) -> None:
        for handler in handlers:
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    await result
            except (exceptions.AddonHalt, exceptions.OptionsError):
                raise
            except Exception as e:
                _stage_failed(handler, e, args, answering)
        if closing is not None:
            closing(*args)

    acall.__name__ = hook
    return acall


def _stage_failed(
    handler: Callable[..., Any], e: Exception, args: tuple[Any, ...], answering: bool
) -> None:
    where = getattr(handler, "__qualname__", str(handler))
    _failed(where, e)
    if answering and args and isinstance(args[0], http.HTTPFlow):
        internal_error(args[0], f"{where} failed ({type(e).__name__}: {e})")


def _failed(where: str, e: Exception) -> None:
    log.error("Addon error in %s: %s", where, e, exc_info=e)
