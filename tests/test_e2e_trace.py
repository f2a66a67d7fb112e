"""Traces end to end: the real go command through a real `modgate run`, then the
`modgate trace` commands run as a user runs them, in a shell of their own.

What go asked for is read back from its module cache (each .mod and .zip there is a
request it completed), so the trace is checked against the client, not against itself.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from mitmproxy.io import FlowReader, read_flows_from_paths
from PIL import Image

from modgate.cli import main
from world.gate import Gate, modgate_command
from world.gocmd import find_go, go_env, run_go
from world.modules import UPPER, MainModule, World, proxy_path, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
PRIVATE = "example.modgate.test"


def rules(upstream: Upstream) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url!r}\n"
        f"checksum:\n  private: {PRIVATE}\n"
    )


def trace(gate: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    """`modgate trace ARGS --db …` as a user runs it."""
    db = str(gate.home / "trace.db")
    done = subprocess.run(
        modgate_command("trace", *args, "--db", db), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"modgate trace {' '.join(args)}: {done.stderr}"
    return done


def trace_json(gate: Gate, *args: str) -> Any:
    return json.loads(trace(gate, *args, "--json").stdout)


def _unescape(text: str) -> str:
    return re.sub(r"!([a-z])", lambda m: m.group(1).upper(), text)


def fetched(gopath: Path) -> list[tuple[str, str, str]]:
    """(kind, module, version) of every .mod and .zip in a client's module cache."""
    root = gopath / "pkg" / "mod" / "cache" / "download"
    found = []
    for path in root.rglob("*"):
        if path.suffix in (".mod", ".zip") and path.parent.name == "@v":
            module = _unescape(str(path.parent.parent.relative_to(root)))
            found.append((path.suffix[1:], module, _unescape(path.stem)))
    return sorted(found)


def asked(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((r["kind"], r["module"], r["version"]) for r in records)


def wait_for_records(db: Path, n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            if conn.execute("SELECT count(*) FROM requests").fetchone()[0] >= n:
                return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} records in {db} after {timeout}s")


def copy_app(app: MainModule, dest: Path) -> Path:
    shutil.copytree(app.dir, dest)
    return dest


def test_a_cold_then_a_warm_go_mod_tidy_as_the_trace_shows_them(
    world: World, tmp_path: Path
) -> None:
    app = write_main_module(world, tmp_path / "app")
    pristine = copy_app(app, tmp_path / "pristine")
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream)) as gate:
        cold = gate.client_env(go_env(tmp_path / "cold", f"https://{HOST}"), "proxy")
        run_go(["mod", "tidy"], cold, app.dir)

        shown = trace_json(gate, "last")
        records = shown["requests"]
        assert asked(records) == fetched(tmp_path / "cold" / "gopath")  # every request, once
        assert {r["cache"] for r in records} == {"miss"}
        assert all(r["status"] == 200 and r["host"] == HOST for r in records)
        assert [r["start"] for r in records] == sorted(r["start"] for r in records)
        upper = next(r for r in records if r["module"] == UPPER and r["kind"] == "zip")
        assert upper["path"] == "/example.modgate.test/%21upper/%21case/@v/v1.2.1.zip"  # as sent
        assert upper["h1"] == world.get(UPPER, "v1.2.1").zip_hash
        assert upper["upstream"] == upstream.url and upper["attempts"] == [f"{upstream.url}: 200"]
        assert 0 < upper["ttfb"] <= upper["end"] - upper["start"]

        text = trace(gate, "last").stdout  # the table a person reads, in request order
        rows = [line.split() for line in text.splitlines() if re.match(r"\s*\d+\s+\+", line)]
        assert [(row[4], row[5]) for row in rows] == [
            (r["kind"], f"{r['module']}@{r['version']}") for r in records
        ]
        assert f"cache:    miss {len(records)}" in text

        # a second client, a moment later, labelled: everything comes from the cache
        trace(gate, "start", "warm")
        warm = gate.client_env(go_env(tmp_path / "warm", f"https://{HOST}"), "proxy")
        run_go(["mod", "tidy"], warm, pristine)
        trace(gate, "stop")
        again = trace_json(gate, "last")
        assert again["session"]["label"] == "warm"
        assert asked(again["requests"]) == asked(records)
        assert {r["cache"] for r in again["requests"]} == {"hit"}

        sessions = trace_json(gate, "ls")
        assert [(s["label"], s["requests"]) for s in sessions] == [
            ("", len(records)),
            ("warm", len(records)),
        ]
        assert [s["hit_ratio"] for s in sessions] == [0.0, 1.0]
        cold_id = str(sessions[0]["id"])
        exports(gate, cold_id, records, tmp_path / "out", world)
    # the live view: one line per finished request in modgate's log
    assert re.search(
        r"\] zip example\.modgate\.test/Upper/Case@v1\.2\.1 200 miss \d+", gate.output()
    )


def exports(
    gate: Gate, session: str, records: list[dict[str, Any]], out: Path, world: World
) -> None:
    """The exports, through the same command line in this process (a subprocess each
    would only add interpreter start-ups)."""

    def cli(*args: str) -> None:
        assert main(["trace", *args, "--db", str(gate.home / "trace.db")]) == 0

    out.mkdir()
    cli("export", session, "--har", str(out / "s.har"))
    har = json.loads((out / "s.har").read_text())
    assert har["log"]["version"] == "1.2"
    entries = har["log"]["entries"]
    assert [e["_modgate"]["id"] for e in entries] == [r["id"] for r in records]
    assert [e["response"]["bodySize"] for e in entries] == [r["bytes_out"] for r in records]
    loaded = read_flows_from_paths([str(out / "s.har")])  # mitmproxy's own HAR reader
    assert [f.request.url for f in loaded] == [  # type: ignore[attr-defined]
        f"https://{HOST}{r['path']}" for r in records
    ]

    cli("export", session, "--flows", str(out / "s.flows"))
    with (out / "s.flows").open("rb") as f:
        flows = list(FlowReader(f).stream())
    assert [f.metadata["modgate.trace"]["id"] for f in flows] == [r["id"] for r in records]
    assert all(f.response.headers["X-Modgate-Cache"] == "miss" for f in flows)  # type: ignore[attr-defined]

    cli(
        "waterfall",
        session,
        "-o",
        str(out / "w.svg"),
        "-o",
        str(out / "w.png"),
        "-o",
        str(out / "w.html"),
    )
    modules = {r["module"] for r in records}
    svg = (out / "w.svg").read_text()
    assert svg.startswith("<svg") and all(f">{m}</text>" in svg for m in modules)
    assert svg.count("<rect x=") >= len(records)
    assert svg in (out / "w.html").read_text()
    with Image.open(out / "w.png") as png:
        assert png.format == "PNG"
        # One row per module (its requests segments on it), not one per request.
        assert png.width >= 1000 and 18 * len(modules) <= png.height < 18 * len(records)
    assert (out / "w.png").stat().st_size > 10_000
    cli("waterfall", session, "--full", "-o", str(out / "full.png"))
    with Image.open(out / "full.png") as png:
        assert png.height >= 18 * (len(records) + len(modules))

    cli("sequence", session, "-o", str(out / "seq.mmd"))
    sequence = (out / "seq.mmd").read_text()
    assert sequence.startswith("sequenceDiagram")
    assert len(re.findall(r"^    C0->>M: GET ", sequence, re.M)) == len(records)

    cli("sbom", session, "-o", str(out / "sbom.json"))
    text = (out / "sbom.json").read_text()
    from cyclonedx.validation.json import JsonStrictValidator  # slow import: only here

    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    components = json.loads(text)["components"]
    zips = sorted((r["module"], r["version"]) for r in records if r["kind"] == "zip")
    assert sorted((c["name"], c["version"]) for c in components) == zips
    for c in components:
        props = {p["name"]: p["value"] for p in c["properties"]}
        mv = world.get(c["name"], c["version"])
        assert props["modgate:h1"] == mv.zip_hash
        assert props["modgate:h1:go.mod"] == mv.gomod_hash
        assert c["purl"] == f"pkg:golang/{c['name']}@{c['version']}"


@pytest.mark.parametrize("stalled", [False, True], ids=["database-keeps-up", "database-stalled"])
def test_sigkill_mid_download_loses_no_completed_request(
    world: World, tmp_path: Path, stalled: bool
) -> None:
    """Every request go completed before modgate was killed is in the trace once modgate
    runs again: committed then, or in the journal it replays on start. Stalled: another
    process holds the database's write lock all along, so nothing is committed before
    the kill and everything comes back from the journal."""
    app = write_main_module(world, tmp_path / "app")
    with Upstream(world) as upstream:
        # A zip go asks for late crawls, so the gate dies with the download in full swing.
        slow = upstream.fault("*/victor/@v/*.zip", throttle=32)
        gate = Gate(tmp_path / "gate", rules(upstream)).start()
        db = sqlite3.connect(gate.home / "trace.db", isolation_level=None)
        if stalled:
            db.execute("BEGIN IMMEDIATE")
        env = gate.client_env(go_env(tmp_path / "c", f"https://{HOST}"), "goproxy")
        go = subprocess.Popen(
            [find_go(), "mod", "tidy"], env=env, cwd=app.dir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(fetched(tmp_path / "c" / "gopath")) < 10 or not slow.hits:
                assert time.monotonic() < deadline, "the download did not get going"
                assert go.poll() is None, "go finished before modgate was killed"
                time.sleep(0.02)
            assert gate.proc is not None
            gate.proc.kill()  # SIGKILL: no clean-up, no flush
            gate.proc.wait()
            done = fetched(tmp_path / "c" / "gopath")  # what go completed, looked at after
        finally:
            go.kill()
            go.wait()
            gate.stop()
            if stalled:
                db.execute("ROLLBACK")
        if stalled:
            assert db.execute("SELECT count(*) FROM requests").fetchone()[0] == 0
        db.close()
        with Gate(tmp_path / "gate", rules(upstream)) as again:  # modgate, started again
            sessions = trace_json(again, "ls")
            records = trace_json(again, "last")["requests"]
    if stalled:
        assert re.search(r"recovering \d+ requests recorded before modgate stopped", again.output())
    assert len(sessions) == 1  # what was replayed carries on with the session it was in
    recorded = {(r["kind"], r["module"], r["version"]) for r in records if r["status"] == 200}
    assert set(done) <= recorded, set(done) - recorded
    assert not any(m.endswith("/victor") and k == "zip" for k, m, _ in recorded)  # in flight
    assert {r["host"] for r in records} == {HOST}  # the GOPROXY endpoint, under its proxy


def test_a_tunnel_to_a_host_modgate_does_not_gate(world: World, tmp_path: Path) -> None:
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream)) as gate:
        proxy = gate.proxy_url.removeprefix("http://")
        host, port = proxy.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.set_tunnel("127.0.0.1", upstream.port)  # not a module proxy: passed through
        conn.request("GET", "/example.modgate.test/alpha/@v/list")
        assert conn.getresponse().read().decode().split() == world.list_versions(f"{PRIVATE}/alpha")
        conn.close()
        wait_for_records(gate.home / "trace.db", 1)  # recorded when the tunnel closes
        records = trace_json(gate, "last")["requests"]
    assert len(records) == 1
    tunnel = records[0]
    assert (tunnel["kind"], tunnel["method"], tunnel["host"], tunnel["port"]) == (
        "tunnel", "CONNECT", "127.0.0.1", upstream.port,
    )  # fmt: skip
    assert tunnel["status"] == 200 and tunnel["end"] >= tunnel["start"]


# What a hostile client or upstream puts where a person or a renderer reads it: terminal
# escapes (set the window title, clear the screen), a Mermaid directive, HTML.
HOSTILE_TEXT = (
    "\x1b]0;pwned\x07\x1b[2J\x9b31m %%{init: {'theme':'dark'}}%% <script>alert(1)</script>"
)
HOSTILE_PATHS = [
    "/%1b]0;pwned%07/@v/list",
    "/%25%25%7Binit%7D%25%25/@v/list",
    f"/{PRIVATE}/%3Cscript%3Ealert(1)%3C%2Fscript%3E/@v/list",
    f"/{PRIVATE}/%1b%5b2J%c2%9b31m/@v/v1.0.0.info",
]
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # any C0 or C1 control but newline


def _raw_get(address: str, path: bytes) -> bytes:
    """GET `path` sent byte for byte, control characters and all (http.client refuses)."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: modgate\r\nConnection: close\r\n\r\n")
        return b"".join(iter(lambda: s.recv(65536), b""))


def test_hostile_paths_and_upstream_errors_are_escaped_in_every_view(
    world: World, tmp_path: Path
) -> None:
    """Client paths and upstream error text reach the live log, `trace show`, the Mermaid
    diagram and the waterfall: each shows them as text, never as instructions to the
    terminal, to Mermaid or to a browser."""
    with (
        Upstream(world) as upstream,
        Gate(tmp_path / "gate", rules(upstream) + "cache:\n  ttl: 1s\n") as gate,
    ):
        _raw_get(
            gate.goproxy_url, f"/{PRIVATE}/!upper/!case/@v/list".encode()
        )  # cached, then stale
        wait_for_records(gate.home / "trace.db", 1)
        time.sleep(1.2)
        upstream.fault(f"/{PRIVATE}/*/@v/list", status=500, body=HOSTILE_TEXT)
        _raw_get(gate.goproxy_url, f"/{PRIVATE}/!upper/!case/@v/list".encode())  # logs a warning
        for path in HOSTILE_PATHS:
            conn = http.client.HTTPConnection(gate.goproxy_url.removeprefix("http://"), timeout=10)
            conn.request("GET", path)
            assert conn.getresponse().status >= 400
            conn.close()
        # Raw control characters in a request line are not HTTP (RFC 9112 3.2): the
        # endpoint refuses them before any stage sees them, saying why, printably.
        refused = _raw_get(gate.goproxy_url, b"/\x1b]0;raw\x07/@v/list")
        assert refused.startswith(b"HTTP/1.1 400 "), refused
        assert refused.endswith(b"modgate: bad request: malformed HTTP request "
                                b"(Invalid char in url path); not served\n"), refused  # fmt: skip
        _raw_get(gate.goproxy_url, f"/{PRIVATE}/alpha/@v/list".encode())  # the upstream's 500
        n = len(HOSTILE_PATHS) + 3
        gate.wait_for("serving stale")
        wait_for_records(gate.home / "trace.db", n)
        gate.wait_for(f"{PRIVATE}/alpha 502")  # its live line
        shown = trace(gate, "last").stdout
        records = trace_json(gate, "last")["requests"]
        sequence = trace(gate, "sequence", "last").stdout
        out, db = tmp_path / "w.svg", str(gate.home / "trace.db")
        assert main(["trace", "waterfall", "last", "-o", str(out), "--db", db]) == 0
        svg = out.read_text()
    log = gate.output()
    assert len(records) == n
    failed = next(r for r in records if r["path"].endswith("alpha/@v/list"))
    assert "\x1b]0;pwned\x07" in failed["error"]  # the JSON keeps it as it was, escaped by JSON
    for name, text in (("the log", log), ("trace show", shown)):
        assert not _CONTROL.search(text), f"{name} passes a control character on: {text!r}"
        assert "\\x1b]0;pwned\\x07" in text, f"{name} does not show the upstream's text: {text!r}"
    for line in sequence.splitlines()[1:]:
        assert "%%" not in line or line.startswith("    %% modgate trace session")
        assert not re.search(
            r"[<>\"]|#(?!\d+;)|;(?<!#\d;)(?<!#\d\d;)(?<!#\d\d\d;)", line.split(":", 1)[-1]
        ), line
    assert not _CONTROL.search(sequence)
    assert "<script>" not in svg and not _CONTROL.search(svg)
    assert "&lt;script&gt;" in svg or "script" not in svg


def _tamper(path: Path) -> None:
    """Change one byte of one file inside the zip at `path`: a valid zip, another hash."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    name = next(n for n in members if n.endswith(".go"))
    members[name] += b"// tampered\n"
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


def test_a_hash_refusal_is_traced_as_the_hash_verdict_not_the_rule_that_let_it_pass(
    world: World, tmp_path: Path
) -> None:
    """The upstream tampers with a zip; the rules allowed the module (the default rule),
    the pinned hash refused it. `trace show` and the flow export say why: the hash."""
    tree = world.write_proxy_tree(tmp_path / "tree")
    zip_path = proxy_path(UPPER, "v1.2.1", ".zip")
    _tamper(tree / zip_path)
    pin = f'checksum:\n  pins: ["{UPPER} v1.2.1 {world.get(UPPER, "v1.2.1").zip_hash}"]\n'
    with Upstream(tree) as upstream:
        gate = Gate(tmp_path / "gate", rules(upstream).replace("checksum:\n", pin))
        with gate:
            try:
                urllib.request.urlopen(f"{gate.goproxy_url}/{zip_path}", timeout=30)
                raise AssertionError("a tampered zip was served")
            except urllib.error.HTTPError as e:
                assert e.code == 502 and b"SECURITY" in e.read()
            wait_for_records(gate.home / "trace.db", 1)
            shown = trace(gate, "last").stdout
            flows = tmp_path / "s.flows"
            trace(gate, "export", "last", "--flows", str(flows))
    security = f"SECURITY: {UPPER}@v1.2.1: upstream sent h1:"
    assert f"refused:  {UPPER}@v1.2.1 (zip): hash: {security}" in shown
    row = next(line for line in shown.splitlines() if re.match(r"\s*1\s+\+", line))
    assert "refused: hash: SECURITY" in row and "default" not in shown
    with flows.open("rb") as f:
        (flow,) = list(FlowReader(f).stream())
    assert flow.metadata["modgate.trace"]["hash_verdict"] == "refused"
    assert f"refused: hash: {security}" in flow.comment
    assert "refused: default" not in flow.comment
    assert f"refused: hash: {security}" in gate.output()  # the live line


def test_an_upstream_error_with_terminal_escapes_still_reaches_go_as_text(
    world: World, tmp_path: Path
) -> None:
    """go drops a whole error body that holds one non-graphic character ("funny business
    with the user's terminal"): a hostile upstream could hide modgate's reason from the
    developer. modgate's answer carries the upstream's text escaped, so go prints it."""
    module = f"{PRIVATE}/alpha"
    version = world.list_versions(module)[0]
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream)) as gate:
        upstream.fault(f"/{module}/@v/*", status=500, body=HOSTILE_TEXT)
        env = gate.client_env(go_env(tmp_path / "c", f"https://{HOST}"), "goproxy")
        done = run_go(["mod", "download", f"{module}@{version}"], env, tmp_path, check=False)
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert not _CONTROL.search(said.replace("\t", "")), said
    assert "server response: modgate: " in said and "no upstream answered" in said, said
    assert "500 \\x1b]0;pwned\\x07" in said, said
