"""Gate connections the network redirected to modgate (transparent mode, local capture)
as the HTTPS proxy gates CONNECTs; part of modgate's addons (`all_addons()`).

A redirected connection says where it goes only by its TLS server name (SNI) or its
`Host` header; its destination address is whatever the client resolved. So:

  - a connection to a host modgate gates is intercepted (mitmproxy's `allow_hosts`, by
    SNI), and each request in it is routed by its `Host`, which must be the name the
    TLS handshake was for (else 421), exactly as in proxy mode;
  - a name lookup (UDP to port 53, from programs local capture takes) passes;
  - any other connection is judged by the host rules under its name (SNI, else `Host`,
    else the destination address): allowed, it is passed through untouched, certificate
    and all, to that NAME as modgate resolves it, not to the address the client chose
    (a client that sends an allowed name to another address reaches the allowed host
    or nothing); refused, it is closed before the TLS handshake completes.

Why a closed handshake, not a 403: to answer, modgate would have to present a
certificate for a host it neither gates nor lets through, speaking as that host; and
for a protocol that is not HTTP a 403 means nothing. The client sees the connection
closed in its handshake (go: "EOF"); the log and the trace say which rule refused it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import connection, http
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands, events, layer, layers, mode_specs
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.utils import human

from modgate.addons import plain
from modgate.addons.settings import Settings
from modgate.config import normal_host
from modgate.rules import Allow, Deny, refusal_message
from modgate.trace.record import TUNNEL, Record

log = logging.getLogger("modgate")
REDIRECTED = (mode_specs.TransparentMode, mode_specs.LocalMode)
DNS_PORT = 53


def redirected(client: connection.Client) -> bool:
    """Whether the network, not the client, sent this connection to modgate."""
    return isinstance(client.proxy_mode, REDIRECTED)


@dataclass
class _Passed:
    start: float
    name: str
    port: int
    method: str
    rule: dict[str, str]


class TransparentGate:
    def __init__(self, settings: Settings, record: Callable[[Record], None]) -> None:
        self.settings = settings
        self.record = record
        self._passed: dict[str, _Passed] = {}  # client connection id: its passthrough

    # --- connections ------------------------------------------------------------------

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """After mitmproxy's NextLayer chose: a passthrough of a redirected connection is
        held to the host rules here. Any error refuses the connection (fail closed)."""
        context = nextlayer.context
        if not redirected(context.client) or nextlayer.layer is None:
            return
        if not isinstance(nextlayer.layer, layers.TCPLayer | layers.UDPLayer):
            return  # intercepted: each request is routed and ruled (requestheaders)
        try:
            self._judge(nextlayer)
        except Exception as e:
            log.exception("modgate: internal error judging a redirected connection")
            self._refuse(nextlayer, "?", 0, "", f"internal error: {type(e).__name__}: {e}", {})

    def _judge(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        runtime = self.settings.runtime
        address = context.server.address
        if context.client.transport_protocol == "udp" and address and address[1] == DNS_PORT:
            return  # name lookups of captured programs (local mode): they need them
        if runtime is None or address is None or context.client.transport_protocol != "tcp":
            why = "not configured yet" if runtime is None else "not a TCP connection to a host"
            self._refuse(nextlayer, "?", 0, "", why, {})
            return
        data = nextlayer.data_client()
        method, name = "TCP", ""
        if starts_like_tls_record(data):
            method, name = "TLS", _sni(data)
        elif host := _host_header(data):
            method, name = "HTTP", host
        port = int(address[1])
        name = normal_host(name) or str(address[0])
        decision = runtime.config.rules.decide_host(name, port, runtime.gated)
        match decision:
            case Allow(rule):
                ruled = {"verdict": "allow", "rule": rule.where, "reason": ""}
                # To the name, as modgate resolves it: not the address the client chose.
                context.server.address = (name, port)
                self._passed[context.client.id] = _Passed(time.time(), name, port, method, ruled)
            case Deny(rule, reason):
                message = refusal_message(f"host {name}:{port}", decision)
                ruled = {"verdict": "deny", "rule": rule.where, "reason": reason}
                self._refuse(nextlayer, name, port, method, message, ruled)

    def _refuse(
        self, nextlayer: layer.NextLayer, name: str, port: int, method: str, why: str,
        ruled: dict[str, str],
    ) -> None:  # fmt: skip
        client = nextlayer.context.client
        log.info("%s (redirected connection from %s, closed)", why,
                 human.format_address(client.peername))  # fmt: skip
        close_connection(nextlayer)
        now = time.time()
        self.record(_record(client, now, now, name, port, method, 403, ruled, why))

    def client_disconnected(self, client: connection.Client) -> None:
        passed = self._passed.pop(client.id, None)
        if passed is not None:
            end = client.timestamp_end or time.time()
            self.record(_record(client, passed.start, end, passed.name, passed.port,
                                passed.method, 200, passed.rule, ""))  # fmt: skip

    # --- requests in intercepted connections --------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Route by the name the client asked for (`Host`), as in proxy mode; mitmproxy put
        the destination address in `request.host`."""
        if flow.response or flow.error or not redirected(flow.client_conn):
            return
        authority = flow.request.host_header or ""
        host, _, port_text = (
            authority.rpartition(":") if _has_port(authority) else (authority, "", "")
        )
        host = normal_host(host.strip("[]"))
        if not host:
            flow.response = plain(400, "modgate: a request without a Host header; not served")
            return
        sni = normal_host(flow.client_conn.sni or "")
        if flow.client_conn.tls_established and sni and sni != host:
            flow.response = plain(
                421, f"modgate: Host {host!r} is not the TLS server name {sni!r}; not served"
            )
            return
        flow.request.data.host = host
        if port_text:
            flow.request.data.port = int(port_text)


def _has_port(authority: str) -> bool:
    head, sep, tail = authority.rpartition(":")
    return bool(sep) and tail.isdigit() and not head.endswith(":")


def _sni(data: bytes) -> str:
    """The server name of a ClientHello (complete: NextLayer parsed it already), or ""."""
    try:
        hello = parse_client_hello(data)
    except ValueError:
        return ""
    return (hello.sni or "") if hello is not None else ""


def _host_header(data: bytes) -> str:
    """The host of a plain HTTP request's `Host` header, "" if none."""
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            text = value.strip().decode("ascii", "replace")
            return (text.rpartition(":")[0] if _has_port(text) else text).strip("[]")
    return ""


def _record(
    client: connection.Client, start: float, end: float, name: str, port: int, method: str,
    status: int, ruled: dict[str, str], error: str,
) -> Record:  # fmt: skip
    peer = client.peername
    return Record(
        start=start, end=end, ttfb=None,
        client=str(peer[0]) if peer else "", client_port=int(peer[1]) if peer else 0,
        method=method or "TCP", scheme="tcp", host=name, port=port, path="", kind=TUNNEL,
        status=status, rule_verdict=ruled.get("verdict", ""), rule=ruled.get("rule", ""),
        rule_reason=ruled.get("reason", ""),
        error="" if ruled.get("verdict") == "deny" else " ".join(error.split()),
    )  # fmt: skip


def close_connection(nextlayer: layer.NextLayer) -> None:
    """Instead of what mitmproxy chose: close the client's connection at once."""
    nextlayer.layer = _Closed(nextlayer.context)


class _Closed(layer.Layer):
    """Closes the client's connection at once: a refused redirected connection."""

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Start):
            yield commands.CloseConnection(self.context.client)
