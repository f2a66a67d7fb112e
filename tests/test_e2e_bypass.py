"""No way around the rules: other spellings and other transports of a gated request get
modgate's answer or modgate's refusal, never the origin's.

As in test_e2e_failclosed, the gated proxy's made-up host resolves (inside modgate only)
to an origin that answers everything with ORIGIN_BYTES; a request modgate let through
unrouted would really get an answer, and the origin counts it.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from world.faults import ORIGIN_BYTES, Origin, Setup, gate_before_origin
from world.gate import Gate
from world.modules import UPPER, World, escape
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
DENIED = "denied.modgate.test"
LIST = f"{escape(UPPER)}/@v/list"


WORLD_MODULES = 6  # the shared `world` fixture (conftest.py), this small


@pytest.fixture(scope="module")
def setup(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    def rules(origin: Origin, upstream: Upstream) -> str:
        return (
            f"proxies:\n  - url: https://{HOST}:{origin.https_port}/go\n"
            f"    upstream: {upstream.url}\n"
            "checksum:\n  databases: []\n"
            "hosts:\n  allow: []\n  default: deny\n"
        )

    with gate_before_origin(world, tmp_path_factory.mktemp("bypass"), rules) as s:
        yield s  # no fault is armed: only the name mapping is used


def _through_proxy(setup: Setup, host: str, path: str) -> tuple[int, bytes]:
    ca = ssl.create_default_context(cafile=setup.gate.confdir / "mitmproxy-ca-cert.pem")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": setup.gate.proxy_url}),
        urllib.request.HTTPSHandler(context=ca),
    )
    try:
        with opener.open(f"https://{host}:{setup.origin.https_port}{path}", timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize(
    "path",
    [
        f"//go/{LIST}",  # nginx merges slashes
        f"/go//{LIST}",
        f"/go;x/{LIST}",  # servlet containers drop ;params
        f"/GO/{LIST}",  # some servers match case-insensitively
        f"/Go/{LIST}",
        f"/./go/{LIST}",
        f"/x/../go/{LIST}",
        f"/go%2f{LIST}",
        "/go",
        "/robots.txt",
        "/",
    ],
)
def test_other_spellings_of_a_proxy_path_never_reach_the_origin(setup: Setup, path: str) -> None:
    status, body = _through_proxy(setup, HOST, path)
    assert ORIGIN_BYTES not in body
    assert (
        status >= 400
        or body == "".join(f"{v}\n" for v in setup.world.list_versions(UPPER)).encode()
    ), (status, body)
    assert body.startswith(b"modgate: ") or status == 200
    assert setup.origin.requests == []


@pytest.mark.parametrize("host", [HOST, HOST.upper(), f"{HOST}.", "Proxy.Modgate.Test."])
def test_every_spelling_of_the_gated_host_is_gated(setup: Setup, host: str) -> None:
    status, body = _through_proxy(setup, host, f"/go/{LIST}")
    assert status == 200, body
    assert body == "".join(f"{v}\n" for v in setup.world.list_versions(UPPER)).encode()
    assert setup.origin.requests == []


def test_unknown_checksum_database_is_not_served(setup: Setup) -> None:
    for path in ("/go/sumdb/unknown.example/supported", "/go/sumdb/unknown.example/latest",
                 f"/go/sumdb/unknown.example/lookup/{UPPER.lower()}@v1.0.0"):  # fmt: skip
        status, body = _through_proxy(setup, HOST, path)
        assert status == 404, (path, body)
        assert body.startswith(b"modgate: checksum database 'unknown.example' is not one")
    assert setup.origin.requests == []


def _proxy_address(gate: Gate) -> tuple[str, int]:
    host, port = gate.proxy_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_tls_to_the_proxy_port_with_an_absolute_url_gets_the_same_host_rules(
    setup: Setup,
) -> None:
    """`curl --proxy https://modgate:8080 http://denied-host/…`: TLS to the proxy itself,
    then an absolute-form request for a host the rules deny."""
    context = ssl.create_default_context(cafile=setup.gate.confdir / "mitmproxy-ca-cert.pem")
    context.check_hostname = False
    target = f"http://{DENIED}:{setup.origin.http_port}/secret"
    with (
        socket.create_connection(_proxy_address(setup.gate), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {DENIED}:{setup.origin.http_port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert ORIGIN_BYTES not in answer
    assert f"modgate: refused host {DENIED}:{setup.origin.http_port}".encode() in answer
    assert setup.origin.requests == []


def test_plain_http_absolute_form_to_a_denied_host_is_refused(setup: Setup) -> None:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": setup.gate.proxy_url})
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"http://{DENIED}:{setup.origin.http_port}/secret", timeout=20)
    assert refused.value.code == 403
    assert ORIGIN_BYTES not in refused.value.read()
    assert setup.origin.requests == []
