"""Faults injected into a real `modgate run` process, and an origin that must never be
reached.

`FaultInjector` writes a `sitecustomize.py` that the modgate process (and the copy of
itself it starts under `python -O`) imports at start-up, through PYTHONPATH:
- every stage hook that decides an answer (Router.requestheaders, CacheGate.request, …)
  raises `RuntimeError("injected fault in Stage.hook")` while the fault file names it,
  so one process serves every fault in turn;
- host names ending in `.modgate.test` resolve to 127.0.0.1, so a request modgate
  forwarded to its origin would really get there (and `Origin` would count it).

`Origin` is that origin: HTTP and HTTPS servers on 127.0.0.1 that answer every request
with `ORIGIN_BYTES` and count them. A gate that fails closed never lets one through.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509

from world.certs import self_signed
from world.gate import Gate
from world.modules import World
from world.upstream import Upstream

ORIGIN_BYTES = b"ORIGIN-BYTES: unchecked answer straight from the origin\n"

# The hooks after which mitmproxy sends what a flow holds (pipeline.ANSWERING).
HOOKS = ("http_connect", "requestheaders", "request", "responseheaders", "response")
# The stages with such hooks: module of modgate.addons, class.
STAGES = (("transparent", "TransparentGate"), ("router", "Router"), ("vcs", "VcsGate"),
          ("rules", "RulesGate"), ("readahead", "ReadAheadGate"), ("cache", "CacheGate"),
          ("fasthit", "FastHitGate"), ("trace", "Tracer"))  # fmt: skip
# Methods outside mitmproxy's hooks that can be made to raise too (module, class, method):
# the GOPROXY endpoint's fast path, which falls back to the stages, and the zip
# read-ahead, which leaves each zip to go's own request (not in injectable()).
METHODS = (("fasthit", "FastHitGate", "endpoint"), ("readahead", "ReadAheadGate", "_zip_ahead"))

SITECUSTOMIZE = """
import functools, inspect, os, socket

_getaddrinfo = socket.getaddrinfo


def _resolve(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.rstrip(".").endswith(".modgate.test"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _resolve

_FAULT_FILE = os.environ.get("MODGATE_TEST_FAULT_FILE")


def _armed(name):
    try:
        with open(_FAULT_FILE) as f:
            return f.read().strip() == name
    except OSError:
        return False


def _wrap(name, original):
    if inspect.iscoroutinefunction(original):
        async def hook(self, *args):
            if _armed(name):
                raise RuntimeError(f"injected fault in {name}")
            return await original(self, *args)
    else:
        def hook(self, *args):
            if _armed(name):
                raise RuntimeError(f"injected fault in {name}")
            return original(self, *args)
    return functools.update_wrapper(hook, original)


if _FAULT_FILE:
    import importlib
    for module, cls in STAGES:
        stage = getattr(importlib.import_module(f"modgate.addons.{module}"), cls)
        for hook_name in HOOKS:
            if hook_name in vars(stage):
                setattr(stage, hook_name, _wrap(f"{cls}.{hook_name}", vars(stage)[hook_name]))
    for module, cls, name in METHODS:
        owner = getattr(importlib.import_module(f"modgate.addons.{module}"), cls)
        setattr(owner, name, _wrap(f"{cls}.{name}", vars(owner)[name]))
"""


def injectable() -> list[str]:
    """Every "Stage.hook" the injector can make raise: the hooks each stage defines."""
    import importlib

    found = []
    for module, cls in STAGES:
        stage = getattr(importlib.import_module(f"modgate.addons.{module}"), cls)
        found += [f"{cls}.{hook}" for hook in HOOKS if hook in vars(stage)]
    return found


class FaultInjector:
    """The sitecustomize directory and fault file for one modgate process."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sitecustomize.py").write_text(
            f"HOOKS = {HOOKS!r}\nSTAGES = {STAGES!r}\nMETHODS = {METHODS!r}\n{SITECUSTOMIZE}"
        )
        self.directory = directory
        self.file = directory / "fault"
        self.file.write_text("")

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.directory), "MODGATE_TEST_FAULT_FILE": str(self.file)}

    def arm(self, name: str) -> None:
        """Make `Stage.hook` raise from now on ("" for no fault)."""
        self.file.write_text(name)


@dataclass
class Setup:
    """A running modgate whose gated hosts lead to a live `origin`, with `faults` to arm."""

    gate: Gate
    origin: Origin
    faults: FaultInjector
    world: World


@contextmanager
def gate_before_origin(
    world: World, home: Path, rules: Callable[[Origin, Upstream], str], *extra_args: str
) -> Iterator[Setup]:
    """`modgate run` with `rules(origin, upstream)`, its made-up host names resolving to
    the origin, and the origin's certificate accepted: the worst case, where a request
    modgate forwarded would really be answered. The origin must count 0 at the end."""
    with Upstream(world) as upstream, Origin(home) as origin:
        faults = FaultInjector(home / "faults")
        gate = Gate(home / "gate", rules(origin, upstream))
        gate.env = faults.env
        gate.extra_args += ["--set", "ssl_insecure=true", *extra_args]
        with gate:
            yield Setup(gate, origin, faults, world)
        assert origin.requests == []


class Origin:
    """Counting HTTP and HTTPS servers that answer everything with ORIGIN_BYTES."""

    def __init__(self, workdir: Path) -> None:
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._servers = [self._server(None), self._server(_tls_context(workdir))]

    @property
    def http_port(self) -> int:
        return int(self._servers[0].server_address[1])

    @property
    def https_port(self) -> int:
        return int(self._servers[1].server_address[1])

    def _server(self, tls: ssl.SSLContext | None) -> ThreadingHTTPServer:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with origin._lock:
                    origin.requests.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(ORIGIN_BYTES)))
                self.end_headers()
                self.wfile.write(ORIGIN_BYTES)

            do_HEAD = do_POST = do_PUT = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()  # fmt: skip
        return server

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> Origin:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _tls_context(workdir: Path) -> ssl.SSLContext:
    """A self-signed certificate for *.modgate.test (modgate must be told to accept it:
    the worst case, where a forwarded request would really be answered)."""
    return self_signed(workdir, "origin.modgate.test", x509.DNSName("*.modgate.test"))[0]
