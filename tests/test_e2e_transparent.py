"""Transparent mode, for real: a client namespace whose only route goes through this one,
where an nftables REDIRECT sends its TCP 80/443 to `modgate run --mode transparent`.
The client sets no proxy at all (only the CA); go downloads through the gate, cold,
then warm with the upstream gone; an allowed host keeps its own certificate; a refused
host is cut off in the handshake; an allowed name sent to another address reaches the
allowed host, not that address."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from world.gate import Gate, modgate_command
from world.gocmd import go_env
from world.modules import World, graph_roots
from world.netns import ClientNamespace, TlsServer, fetch_script, missing
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(missing()), reason=missing() or "-")]

WORLD_MODULES = 6
PROXY, ORIGIN, EVIL, DENIED, PLAIN = (
    f"{n}.modgate.test" for n in ("proxy", "origin", "evil", "denied", "plain")
)
# A module version the rules refuse, and the reason go must show for it.
REFUSED, REASON = "example.modgate.test/delta", "delta-rc-is-quarantined"


def transparent_env(gate: Gate) -> dict[str, str]:
    """What `modgate env --transparent` tells a client to set: the CA, and no proxy."""
    done = subprocess.run(modgate_command("env", "--transparent", "--confdir", str(gate.confdir)),
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    lines = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in done.stdout.splitlines()
    )
    assert set(lines) == {"SSL_CERT_FILE", "GIT_SSL_CAINFO"}, done.stdout
    return lines


class Setup:
    def __init__(self, gate: Gate, ns: ClientNamespace, upstream: Upstream, db: TestSumdb,
                 origin: TlsServer, evil: TlsServer, workdir: Path) -> None:  # fmt: skip
        self.gate, self.ns, self.upstream, self.db = gate, ns, upstream, db
        self.origin, self.evil, self.workdir = origin, evil, workdir
        self.client_env = transparent_env(gate)

    def go(
        self, home: Path, *args: str, check: bool = True, goproxy: str = f"https://{PROXY}"
    ) -> subprocess.CompletedProcess[str]:
        env = go_env(home, goproxy, GOSUMDB=self.db.verifier_key) | self.client_env
        assert not any(k.lower().endswith("_proxy") for k in env)
        home.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(self.ns.command(["go", *args]), env=env, cwd=home,
                              capture_output=True, text=True, timeout=180)  # fmt: skip
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def fetch(self, url: str, cafile: str, connect_to: str = "") -> str:
        done = subprocess.run(self.ns.command(fetch_script(url, cafile, connect_to)),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        return done.stdout

    def traced(self, host: str, until: Callable[[list[sqlite3.Row]], bool]) -> list[sqlite3.Row]:
        return self.gate.traced("host = ?", (host,), until)


@pytest.fixture(scope="module")
def setup(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("transparent")
    with TestSumdb().add_world(world) as db, Upstream(world) as upstream:
        ns = ClientNamespace({}, extra=1)
        names = {PROXY: ns.gateway, ORIGIN: ns.gateway, DENIED: ns.gateway, EVIL: ns.extra[0],
                 PLAIN: ns.gateway, db.name: ns.gateway}  # fmt: skip
        ns.hosts = names
        rules = (
            f"proxies:\n  - url: https://{PROXY}\n    upstream: {upstream.url}\n"
            f"  - url: http://{PLAIN}\n    upstream: {upstream.url}\n"
            f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
            f"hosts:\n  allow: [{ORIGIN}]\n  default: deny\n  reason: only the module proxy\n"
            f"modules:\n  - deny: {REFUSED}\n    versions: '>=1.3.0-rc.1'\n    reason: {REASON}\n"
            "  - allow: '**'\n"
        )
        gate = Gate(work / "gate", rules)
        gate.extra_args = ["--mode", "transparent", "--listen-host", "0.0.0.0"]
        gate.env = {"PYTHONPATH": str(ns.sitecustomize(work / "site"))}
        servers: list[TlsServer] = []
        try:
            with gate:
                ns.start(int(urlsplit(gate.proxy_url).port or 0))
                servers.append(TlsServer(work, ns.gateway, ORIGIN, b"the origin itself\n"))
                (work / "evil").mkdir()
                servers.append(TlsServer(work / "evil", ns.extra[0], ORIGIN, b"EVIL\n"))
                yield Setup(gate, ns, upstream, db, *servers, work)
        finally:
            for server in servers:
                server.close()
            ns.close()


def test_go_downloads_through_the_gate_with_no_proxy_settings_cold_then_offline(
    setup: Setup, world: World, tmp_path: Path
) -> None:
    target = f"{graph_roots(world)[0]}@latest"
    cold = setup.go(tmp_path / "cold", "mod", "download", "-json", target)
    assert setup.upstream.count("*.zip") > 0, "modgate fetched nothing: not on the path"
    info = json.loads(cold.stdout)
    assert "Error" not in info
    # The zip go stored is the world's own, byte for byte (go also checked it against
    # the checksum database, through the gate).
    expected = next(
        mv for mv in world if f"{mv.path}@{mv.version}" == f"{info['Path']}@{info['Version']}"
    )
    assert Path(info["Zip"]).read_bytes() == expected.zip_bytes()
    setup.upstream.stop()
    try:
        warm = setup.go(tmp_path / "warm", "mod", "download", "-json", target)
        assert json.loads(warm.stdout)["Sum"] == info["Sum"]
    finally:
        setup.upstream.start()
    kinds = {"info", "mod", "zip"}
    routed = setup.traced(PROXY, lambda rows: {r["kind"] for r in rows} >= kinds)
    assert {r["kind"] for r in routed} >= kinds, "routed by name, not as 'other'"


def test_an_allowed_host_keeps_its_own_certificate(setup: Setup) -> None:
    # Trusting only the origin's own certificate: it is the origin that answers.
    out = setup.fetch(f"https://{ORIGIN}/hello", str(setup.workdir / f"{ORIGIN}.pem"))
    assert out == "200 the origin itself\n"
    assert "/hello" in setup.origin.requests


def test_a_refused_host_is_cut_off_in_the_handshake_and_traced(setup: Setup) -> None:
    out = setup.fetch(f"https://{DENIED}/x", str(setup.gate.bundle))
    assert out.startswith("ERROR"), out
    records = setup.traced(DENIED, bool)
    assert records and records[-1]["rule_verdict"] == "deny", [dict(r) for r in records]
    setup.gate.wait_for(f"refused host {DENIED}:443")


def test_an_allowed_name_sent_to_another_address_reaches_the_allowed_host(setup: Setup) -> None:
    # The client connects to the evil server's address with the allowed name: the gate
    # passes the connection on to that name, never to the address the client chose.
    before = len(setup.evil.requests)
    out = setup.fetch(f"https://{ORIGIN}/sneak", str(setup.workdir / f"{ORIGIN}.pem"),
                      connect_to=setup.ns.extra[0])  # fmt: skip
    assert out == "200 the origin itself\n"
    assert len(setup.evil.requests) == before


def test_a_request_whose_host_is_not_its_server_name_is_refused(setup: Setup) -> None:
    # TLS to the gated proxy's name, then a request for another host inside it.
    code = f"""
import http.client, ssl, socket, sys
ctx = ssl.create_default_context(cafile={str(setup.gate.bundle)!r})
raw = socket.create_connection(({PROXY!r}, 443), timeout=10)
c = http.client.HTTPSConnection({PROXY!r}, 443, context=ctx)
c.sock = ctx.wrap_socket(raw, server_hostname={PROXY!r})
c.request("GET", "/x/@v/list", headers={{"Host": {DENIED!r}}})
r = c.getresponse()
sys.stdout.write(f"{{r.status}} " + r.read().decode())
"""
    done = subprocess.run(setup.ns.command(["python3", "-c", code]), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.stdout.startswith("421 modgate: Host"), done.stdout + done.stderr


def test_doctor_in_the_client_sees_the_redirect_and_modgate_answering(
    setup: Setup, tmp_path: Path
) -> None:
    env = go_env(tmp_path, f"https://{PROXY}", GOSUMDB=setup.db.verifier_key,
                 SSL_CERT_FILE=str(setup.gate.bundle))  # fmt: skip
    port = str(urlsplit(setup.gate.proxy_url).port)
    done = subprocess.run(
        setup.ns.command(modgate_command(
            "doctor", "--transparent", "--json", "--listen-host", setup.ns.gateway,
            "--listen-port", port, "--goproxy-port", "-1", "--confdir", str(setup.gate.confdir),
            "--rules", str(setup.gate.rules), "--probe", "example.com/doctor",
        )),
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    report = json.loads(done.stdout)
    found = {f["check"]: f for f in report["findings"]}
    assert report["route"] == "transparent"
    assert found["ca-bundle"]["status"] == "ok"
    assert (
        found["probe"]["status"] == "ok"
        and "redirected by the network" in found["probe"]["message"]
    )
    assert found["client-sumdb"]["status"] == "ok"


def test_a_plain_http_module_proxy_on_port_80_is_gated_too(
    setup: Setup, world: World, tmp_path: Path
) -> None:
    target = f"{graph_roots(world)[0]}@latest"
    done = setup.go(tmp_path, "mod", "download", "-json", target, goproxy=f"http://{PLAIN}")
    assert "Error" not in json.loads(done.stdout)
    rows = setup.traced(PLAIN, lambda rows: {r["kind"] for r in rows} >= {"info", "mod", "zip"})
    assert {r["kind"] for r in rows} >= {"info", "mod", "zip"}
    assert all(r["scheme"] == "http" and r["port"] == 80 for r in rows)


def test_a_module_the_rules_refuse_is_refused_with_the_reason(setup: Setup, tmp_path: Path) -> None:
    # The client set nothing: the redirect alone brought it here, and the rules still hold.
    path = f"/{REFUSED}/@v/v1.3.0-rc.1"
    done = setup.go(tmp_path, "mod", "download", "-json", f"{REFUSED}@v1.3.0-rc.1", check=False)
    assert done.returncode != 0
    assert "403 Forbidden" in done.stdout and REASON in done.stdout, done.stdout + done.stderr
    # Its go.mod may be read (go reads those of versions it never builds); its code never.
    assert setup.upstream.count(f"{path}.zip") == 0, "a refused zip reached the upstream"


def test_an_artifact_that_fails_its_hash_never_reaches_the_client(
    setup: Setup, world: World, tmp_path: Path
) -> None:
    # The upstream swaps a go.mod the checksum database knows: modgate refuses it before
    # go sees it, and keeps nothing (a second client, after the upstream heals, gets the
    # true file from the upstream again).
    mv = next(mv for mv in world if mv.path.endswith("/bravo") and mv.version == "v1.0.0")
    path = f"/{mv.path}/@v/{mv.version}.mod"
    setup.upstream.fault(path, status=200, body=f"module {mv.path}\n// swapped\n")
    try:
        done = setup.go(tmp_path / "a", "mod", "download", "-json", f"{mv.path}@{mv.version}",
                        check=False)  # fmt: skip
    finally:
        setup.upstream.clear_faults()
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "swapped" not in out
    assert f"SECURITY: {mv.path}@{mv.version}/go.mod: upstream sent h1:" in out, out
    before = setup.upstream.count(path)
    healed = setup.go(tmp_path / "b", "mod", "download", "-json", f"{mv.path}@{mv.version}")
    assert "Error" not in json.loads(healed.stdout)
    assert setup.upstream.count(path) == before + 1, "the refused go.mod had been kept"
