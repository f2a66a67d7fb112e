"""TransparentGate: redirected connections judged by name, passed through to that name or
closed; requests in intercepted ones routed by a Host that must be their TLS name. The
real thing, in network namespaces: test_e2e_transparent.py."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import connection
from mitmproxy.options import Options
from mitmproxy.proxy import context, events, layer, layers, mode_specs
from mitmproxy.test import taddons, tflow

from modgate.addons.settings import Settings
from modgate.addons.transparent import TransparentGate
from modgate.addons.vcs import VcsGate
from modgate.trace.record import Record

RULES = """
proxies:
  - url: https://proxy.modgate.test
    upstream: http://127.0.0.1:9
checksum:
  databases: []
hosts:
  allow: [git.modgate.test]
  vcs: ["*.vcs.modgate.test"]
  default: deny
  reason: only the module proxy
"""


def run(tmp_path: Path, test: Callable[[TransparentGate, list[Record]], None]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    records: list[Record] = []

    async def main() -> None:
        settings = Settings()
        gate = TransparentGate(settings, records.append)
        with taddons.context(settings) as tctx:
            tctx.configure(settings, modgate_rules=str(rules), modgate_cache_dir=str(tmp_path / "c"),
                           modgate_goproxy="off", modgate_gosumdb="off")  # fmt: skip
            try:
                test(gate, records)
            finally:
                await settings.done()

    asyncio.run(main())


def redirected(data: bytes, mode: str = "transparent", dest: str = "10.9.9.9") -> layer.NextLayer:
    """A redirected connection to dest:443 whose client sent `data`, with mitmproxy's
    NextLayer decision made: passed through (it is not for a gated host)."""
    client = connection.Client(peername=("10.0.0.2", 5555), sockname=("10.0.0.1", 8080),
                               timestamp_start=1, proxy_mode=mode_specs.ProxyMode.parse(mode))  # fmt: skip
    ctx = context.Context(client, Options())
    ctx.server.address = (dest, 443)
    nextlayer = layer.NextLayer(ctx)
    nextlayer.events = [events.DataReceived(client, data)]
    nextlayer.layer = layers.TCPLayer(ctx, ignore=True)
    return nextlayer


def client_hello(name: str) -> bytes:
    """The first bytes a TLS client sends for `name`."""
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(),
                                                 server_hostname=name)  # fmt: skip
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def http_request(host: str) -> bytes:
    return f"GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


@pytest.mark.parametrize(
    "data", [client_hello("git.modgate.test"), http_request("GIT.modgate.test.")]
)
def test_an_allowed_name_passes_through_to_that_name_not_the_address(
    tmp_path: Path, data: bytes
) -> None:
    def test(gate: TransparentGate, records: list[Record]) -> None:
        nl = redirected(data)
        gate.next_layer(nl)
        assert isinstance(nl.layer, layers.TCPLayer)
        assert nl.context.server.address == ("git.modgate.test", 443)
        gate.client_disconnected(nl.context.client)
        assert [(r.host, r.status, r.rule_verdict) for r in records] == [
            ("git.modgate.test", 200, "allow")
        ]

    run(tmp_path, test)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (client_hello("elsewhere.example"), "elsewhere.example"),
        (http_request("elsewhere.example:80"), "elsewhere.example"),
        (b"\x00\x01binary nobody can name", "10.9.9.9"),  # judged by its address
        (client_hello("10.9.9.9"), "10.9.9.9"),  # TLS to an IP: no SNI
    ],
)  # fmt: skip
def test_any_other_connection_is_closed_and_traced(tmp_path: Path, data: bytes, name: str) -> None:
    def test(gate: TransparentGate, records: list[Record]) -> None:
        nl = redirected(data)
        gate.next_layer(nl)
        assert not isinstance(nl.layer, layers.TCPLayer)
        assert [(r.host, r.status, r.rule_verdict) for r in records] == [(name, 403, "deny")]
        assert "only the module proxy" in records[0].rule_reason

    run(tmp_path, test)


def test_a_vcs_host_that_was_not_intercepted_is_closed_not_passed(tmp_path: Path) -> None:
    def test(gate: TransparentGate, records: list[Record]) -> None:
        vcs = VcsGate(gate.settings)
        for mode in ("regular", "transparent"):
            nl = redirected(client_hello("git.vcs.modgate.test"), mode=mode)
            nl.context.server.address = ("git.vcs.modgate.test", 443)
            gate.next_layer(nl)
            vcs.next_layer(nl)
            assert not isinstance(nl.layer, layers.TCPLayer), mode

    run(tmp_path, test)


def test_an_error_while_judging_closes_the_connection(tmp_path: Path) -> None:
    class Broken(Settings):
        @property
        def runtime(self) -> Any:
            raise RuntimeError("injected")

        @runtime.setter
        def runtime(self, value: Any) -> None:
            pass

    def test(gate: TransparentGate, records: list[Record]) -> None:
        gate.settings = Broken()
        nl = redirected(client_hello("git.modgate.test"))
        gate.next_layer(nl)
        assert not isinstance(nl.layer, layers.TCPLayer)
        assert records and records[0].status == 403 and "injected" in records[0].error

    run(tmp_path, test)


def test_connections_a_client_sent_to_the_proxy_itself_are_left_alone(tmp_path: Path) -> None:
    def test(gate: TransparentGate, records: list[Record]) -> None:
        nl = redirected(client_hello("elsewhere.example"), mode="regular")
        gate.next_layer(nl)
        assert isinstance(nl.layer, layers.TCPLayer) and not records

    run(tmp_path, test)


def _flow(host_header: str | None, sni: str | None, mode: str = "transparent") -> Any:
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    flow.client_conn.sni = sni
    flow.client_conn.tls_version = "TLSv1.3" if sni else None
    flow.request.host, flow.request.port = "10.9.9.9", 443
    flow.request.authority = ""
    if host_header is None:
        flow.request.headers.pop("Host", None)
    else:
        flow.request.headers["Host"] = host_header
    return flow


@pytest.mark.parametrize(
    ("host", "sni", "status", "routed"),
    [
        ("proxy.modgate.test", "proxy.modgate.test", None, ("proxy.modgate.test", 443)),
        ("PROXY.modgate.test.", "proxy.modgate.test", None, ("proxy.modgate.test", 443)),
        ("proxy.modgate.test:8443", "proxy.modgate.test", None, ("proxy.modgate.test", 8443)),
        ("git.modgate.test", "proxy.modgate.test", 421, None),
        (None, "proxy.modgate.test", 400, None),
        ("", "proxy.modgate.test", 400, None),
    ],
)  # fmt: skip
def test_requests_are_routed_by_a_host_that_is_their_tls_name(
    tmp_path: Path, host: str | None, sni: str, status: int | None, routed: tuple[str, int] | None
) -> None:
    def test(gate: TransparentGate, records: list[Record]) -> None:
        flow = _flow(host, sni)
        gate.requestheaders(flow)
        if status is None:
            assert flow.response is None
            assert (flow.request.host, flow.request.port) == routed
        else:
            assert flow.response is not None and flow.response.status_code == status
            assert flow.response.text.startswith("modgate: ")

    run(tmp_path, test)
