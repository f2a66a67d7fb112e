"""modgate's addons as one mitmproxy addon, which calls them in order.

mitmproxy hands every event to every addon it holds, and once more as `update` after
each flow event. Each delivery costs a generator, a getattr, a context manager and a
call per addon, whether the addon answers the event or not: about 2.3 µs, eight or more
times per request. With modgate's six stages registered one by one, that was a tenth of
the CPU of a cached hit (scripts/bench, issue 6).

So mitmproxy holds one `Pipeline`. For each hook that some stage answers, the pipeline
has a method that calls just those stages, in the order they were given; for the others
it has no method, and mitmproxy passes it by. Errors are handled as mitmproxy would: an
exception in one stage is logged with its traceback and the next stage still runs;
AddonHalt and OptionsError go up to mitmproxy (a bad `--set` still stops `modgate run`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mitmproxy import exceptions, hooks

log = logging.getLogger("modgate")
T = TypeVar("T")


class Pipeline:
    name = "modgate"  # what ctx.master.addons.get() finds it by

    def __init__(self, stages: Sequence[object]) -> None:
        self.stages = tuple(stages)
        for hook in sorted(hook_names()):
            handlers = [getattr(s, hook) for s in self.stages if callable(getattr(s, hook, None))]
            if handlers:
                setattr(self, hook, _dispatcher(hook, handlers))

    def stage(self, kind: type[T]) -> T:
        """The stage of type `kind`."""
        for s in self.stages:
            if isinstance(s, kind):
                return s
        raise LookupError(f"no {kind.__name__} in the pipeline")

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(type(s).__name__ for s in self.stages)})"


def hook_names() -> frozenset[str]:
    """Every event mitmproxy can send. Hooks register as their modules load, so load
    every module that defines them."""
    import mitmproxy.addonmanager  # noqa: F401  load
    import mitmproxy.log  # noqa: F401  add_log
    import mitmproxy.proxy.layers  # noqa: F401  http, tcp, udp, tls, dns, websocket, quic
    import mitmproxy.proxy.server_hooks  # noqa: F401  client and server connections

    return frozenset(hooks.all_hooks)


def _dispatcher(hook: str, handlers: list[Callable[..., Any]]) -> Callable[..., Any]:
    # mitmproxy calls a hook from synchronous code too (load, configure) and refuses a
    # coroutine function there: the dispatcher is async only if some handler is. The two
    # loops are alike on purpose: a shared context manager for the error handling made
    # every cached hit ~0.1 ms slower (measured A/B, scripts/bench's hits).
    if not any(inspect.iscoroutinefunction(h) for h in handlers):

        def call(*args: Any) -> None:
            for handler in handlers:
                try:
                    handler(*args)
                except (exceptions.AddonHalt, exceptions.OptionsError):
                    raise
                except Exception as e:
                    _failed(handler, e)

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
                _failed(handler, e)

    acall.__name__ = hook
    return acall


def _failed(handler: Callable[..., Any], e: Exception) -> None:
    log.error("Addon error in %s: %s", getattr(handler, "__qualname__", handler), e, exc_info=e)
