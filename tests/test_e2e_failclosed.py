"""Fail closed, in the real process: an exception in any stage, in any hook that decides
an answer, never lets a gated request reach its origin.

One `modgate run` gates two proxies whose made-up host names resolve (inside modgate
only) to an origin that answers everything with ORIGIN_BYTES: forwarding a request
there, as mitmproxy does with a flow no addon answered, would really hand the client
unchecked bytes. Each stage hook is made to raise in turn (tests/world/faults.py) while
a client asks for a list, an .info, a .mod, a small and a large (streamed) zip, a path
no proxy serves and an unknown checksum database, through the HTTPS proxy, as plain
HTTP through the proxy, and at the GOPROXY endpoint. Every answer is either the
artifact's own bytes, served by modgate, or an error modgate wrote; the origin counts 0.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from world import netns
from world.faults import ORIGIN_BYTES, Origin, Setup, gate_before_origin, injectable
from world.gocmd import go_env, run_go
from world.modules import BULK, UPPER, World, escape, proxy_path, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

TLS_HOST = "proxy.modgate.test"
PLAIN_HOST = "plain.modgate.test"
FAULTS = injectable()


WORLD_MODULES = 6  # the shared `world` fixture (conftest.py), this small
WORLD_PAYLOAD = 2 << 20  # and BULK, a zip large enough to stream


@pytest.fixture(scope="module")
def setup(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    def rules(origin: Origin, upstream: Upstream) -> str:
        return (
            f"proxies:\n"
            f"  - url: https://{TLS_HOST}:{origin.https_port}\n    upstream: {upstream.url}\n"
            f"  - url: http://{PLAIN_HOST}:{origin.http_port}\n    upstream: {upstream.url}\n"
            "checksum:\n  databases: []\n"
        )

    home = tmp_path_factory.mktemp("failclosed")
    # modgate_redirect_local=false: a large zip streams through mitmproxy, from modgate's
    # own file server, the one unanswered flow a gated request may become.
    with gate_before_origin(world, home, rules, "--set", "modgate_redirect_local=false") as s:
        yield s


def _expected(world: World) -> dict[str, bytes]:
    upper = world.get(UPPER, "v1.2.1")
    return {
        f"{escape(UPPER)}/@v/list": "".join(f"{v}\n" for v in world.list_versions(UPPER)).encode(),
        proxy_path(UPPER, "v1.2.1", ".info"): upper.info,
        proxy_path(UPPER, "v1.2.1", ".mod"): upper.gomod,
        proxy_path(UPPER, "v1.2.1", ".zip"): world.zip_path(upper).read_bytes(),
        proxy_path(BULK, "v1.0.0", ".zip"): world.zip_path(world.get(BULK, "v1.0.0")).read_bytes(),
        "robots.txt": b"",  # not a proxy path: refused
        "sumdb/unknown.example/supported": b"",  # no such database: not served
    }


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer (tunnel refused, connection cut)
    body: bytes
    cache: str = ""
    error: str = ""


def _ask(setup: Setup, transport: str, path: str) -> Answer:
    gate, origin = setup.gate, setup.origin
    handlers: list[urllib.request.BaseHandler] = []
    if transport == "https-proxy":
        url = f"https://{TLS_HOST}:{origin.https_port}/{path}"
        ca = ssl.create_default_context(cafile=gate.confdir / "mitmproxy-ca-cert.pem")
        handlers = [urllib.request.ProxyHandler({"https": gate.proxy_url}),
                    urllib.request.HTTPSHandler(context=ca)]  # fmt: skip
    elif transport == "http-proxy":
        url = f"http://{PLAIN_HOST}:{origin.http_port}/{path}"
        handlers = [urllib.request.ProxyHandler({"http": gate.proxy_url})]
    else:
        url = f"{gate.goproxy_url}/{path}"
        handlers = [urllib.request.ProxyHandler({})]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=30) as r:
            return Answer(r.status, r.read(), r.headers.get("X-Modgate-Cache", ""))
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read(), e.headers.get("X-Modgate-Cache", ""))
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as e:
        return Answer(0, b"", error=str(e))


@pytest.mark.parametrize("transport", ["https-proxy", "http-proxy", "goproxy-endpoint"])
def test_an_exception_in_any_stage_never_lets_a_gated_request_reach_its_origin(
    setup: Setup, transport: str
) -> None:
    _every_fault(setup, transport, lambda paths: [_ask(setup, transport, p) for p in paths])


def _every_fault(setup: Setup, transport: str, ask: Callable[[list[str]], list[Answer]]) -> None:
    expected = _expected(setup.world)
    fired: dict[str, int] = {}
    for fault in ["", *FAULTS]:
        setup.faults.arm(fault)
        for (path, want), answer in zip(expected.items(), ask(list(expected)), strict=True):
            what = f"{fault or 'no fault'}, {transport}, /{path}"
            assert ORIGIN_BYTES not in answer.body, what
            if answer.status == 200:
                # Served by modgate (it says how), and exactly the artifact's bytes.
                assert answer.cache, what
                assert answer.body == want, what
            elif answer.status:
                assert answer.body.startswith(b"modgate: "), (what, answer)
                if b"internal error" in answer.body:
                    assert fault and fault.encode() in answer.body, (what, answer)
                    fired[fault] = fired.get(fault, 0) + 1
            else:  # a refused tunnel or a cut connection: no bytes at all
                assert fault, (what, answer)
                fired[fault] = fired.get(fault, 0) + 1
            if not fault:
                assert answer.status == 200 or path in (
                    "robots.txt",
                    "sumdb/unknown.example/supported",
                ), what
    setup.faults.arm("")
    assert setup.origin.requests == []
    # Every fault that can meet this transport's requests met one, and failed closed.
    reachable = [f for f in FAULTS if transport == "https-proxy" or "http_connect" not in f]
    assert sorted(fired) == sorted(reachable)


ASK_ALL = """
import base64, json, ssl, sys, urllib.error, urllib.request
base, cafile, paths = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
    urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
out = []
for path in paths:
    try:
        with opener.open(f"{base}/{path}", timeout=30) as r:
            out.append([r.status, base64.b64encode(r.read()).decode(), r.headers.get("X-Modgate-Cache", ""), ""])
    except urllib.error.HTTPError as e:
        out.append([e.code, base64.b64encode(e.read()).decode(), e.headers.get("X-Modgate-Cache", ""), ""])
    except Exception as e:
        out.append([0, "", "", str(e)])
print(json.dumps(out))
"""


@pytest.mark.skipif(bool(netns.missing()), reason=netns.missing() or "-")
def test_in_transparent_mode_too(world: World, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same faults, with the client's connections redirected to `modgate run --mode
    transparent` by the network (a namespace and an nftables REDIRECT): no proxy settings."""
    home = tmp_path_factory.mktemp("failclosed-transparent")
    ns = netns.ClientNamespace({TLS_HOST: "", PLAIN_HOST: ""})
    ns.hosts = {TLS_HOST: ns.gateway, PLAIN_HOST: ns.gateway}

    def rules(origin: Origin, upstream: Upstream) -> str:
        return (
            f"proxies:\n"
            f"  - url: https://{TLS_HOST}:{origin.https_port}\n    upstream: {upstream.url}\n"
            "checksum:\n  databases: []\n"
        )

    args = (
        "--mode",
        "transparent",
        "--listen-host",
        "0.0.0.0",
        "--set",
        "modgate_redirect_local=false",
    )
    with gate_before_origin(world, home, rules, *args) as setup:
        port = int(urlsplit(setup.gate.proxy_url).port or 0)
        try:
            ns.start(port, (80, 443, setup.origin.https_port))
            base = f"https://{TLS_HOST}:{setup.origin.https_port}"
            cafile = str(setup.gate.confdir / "mitmproxy-ca-cert.pem")

            def ask(paths: list[str]) -> list[Answer]:
                done = subprocess.run(
                    ns.command([sys.executable, "-c", ASK_ALL, base, cafile, json.dumps(paths)]),
                    capture_output=True, text=True, timeout=300,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                return [
                    Answer(s, base64.b64decode(b), c, e) for s, b, c, e in json.loads(done.stdout)
                ]

            _every_fault(setup, "transparent", ask)
        finally:
            ns.close()


def test_go_itself_sees_modgate_s_error_not_the_origin(setup: Setup, tmp_path: Path) -> None:
    """What a user sees: go prints modgate's one-line reason after "server response:"."""
    app = write_main_module(setup.world, tmp_path / "app")
    origin = setup.origin
    env = setup.gate.client_env(
        go_env(tmp_path / "go", f"https://{TLS_HOST}:{origin.https_port}", GONOSUMDB="*"),
    )
    setup.faults.arm("CacheGate.request")
    try:
        failed = run_go(["mod", "download", "-json", f"{UPPER}@v1.1.0"], env, app.dir, check=False)
    finally:
        setup.faults.arm("")
    assert failed.returncode != 0
    assert "modgate: internal error: CacheGate.request failed" in failed.stdout + failed.stderr
    assert "ORIGIN-BYTES" not in failed.stdout + failed.stderr
    assert setup.origin.requests == []
    ok = run_go(["mod", "download", "-json", f"{UPPER}@v1.1.0"], env, app.dir)
    assert ok.returncode == 0
