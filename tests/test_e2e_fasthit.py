"""The fast path for cached small hits (modgate/fasthit.py, addons/fasthit.py), attacked
end to end against a real `modgate run`, on both front ends: a rules reload or a revoked
token stops its answers at once; a stored body damaged on disk is never what it sends;
every answer it gives is traced and counted; and for any spelling of a request (`%2F`,
`..`, `!` escapes, queries, HEAD, `If-*` headers) it answers byte for byte what the
pipeline answered. And a real `go mod download` through it."""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import sqlite3
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from world.faults import FaultInjector
from world.gate import Gate, modgate_command
from world.gocmd import go_env, run_go
from world.modules import ModuleVersion, World, graph_roots, proxy_path
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
MODES = ("endpoint", "proxy")
Answer = tuple[int, list[tuple[str, str]], bytes]


def rules(upstream: str, db: TestSumdb, extra: str = "", deny: str = "") -> str:
    refused = f"  - deny: {deny}\n    reason: gone\n" if deny else ""
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream}\n"
        f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
        f"modules:\n{refused}  - deny: nothing.modgate.test/never\n    reason: none\n{extra}"
    )


class Client:
    """Raw HTTP/1.1 on one kept-alive connection: to the endpoint, or through the HTTPS
    proxy's CONNECT tunnel to the gated proxy's host."""

    def __init__(self, gate: Gate, mode: str, proxy_auth: str = "") -> None:
        self.mode = mode
        if mode == "endpoint":
            url = urlsplit(gate.goproxy_url)
            sock = socket.create_connection((url.hostname, url.port), timeout=30)
            if url.scheme == "https":
                context = ssl.create_default_context(cafile=str(gate.bundle))
                sock = context.wrap_socket(sock, server_hostname=url.hostname)
            self.host = url.netloc
        else:
            proxy = urlsplit(gate.proxy_url)
            sock = socket.create_connection((proxy.hostname, proxy.port), timeout=30)
            auth = f"Proxy-Authorization: {proxy_auth}\r\n" if proxy_auth else ""
            sock.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n{auth}\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(1)
                assert chunk, "the proxy closed the tunnel"
                head += chunk
            assert head.split()[1] == b"200", head
            context = ssl.create_default_context(cafile=str(gate.bundle))
            sock = context.wrap_socket(sock, server_hostname=HOST)
            self.host = HOST
        self.sock = sock
        self.file = sock.makefile("rb")

    def request(self, path: str, *headers: tuple[str, str], method: str = "GET") -> Answer:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{lines}\r\n".encode())
        status_line = self.file.readline()
        assert status_line, "closed with no answer"
        fields = []
        while (line := self.file.readline().decode("latin-1").rstrip("\r\n")) != "":
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
        length = int(dict(fields).get("content-length", "0"))
        body = b"" if method == "HEAD" else self.file.read(length)
        return int(status_line.split()[1]), fields, body

    def warm(self, path: str) -> Answer:
        """GET `path` until it is a hit (a fetch answers the requests that arrive while it
        is stored with its own checked body, as misses): the pipeline's first hit."""
        for _ in range(100):
            answer = self.request(path)
            if ("x-modgate-cache", "hit") in answer[1]:
                return answer
            time.sleep(0.05)
        raise AssertionError(f"{path} never became a hit: {answer}")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def client(gate: Gate, mode: str, proxy_auth: str = "") -> Iterator[Client]:
    c = Client(gate, mode, proxy_auth)
    try:
        yield c
    finally:
        c.close()


def fast_answers(gate: Gate, mode: str) -> float:
    front = "endpoint" if mode == "endpoint" else "proxy"
    for family in text_string_to_metric_families(_scrape(gate)):
        for s in family.samples:
            if s.name == "modgate_fast_answers_total" and s.labels.get("front") == front:
                return s.value
    return 0.0


def _scrape(gate: Gate) -> str:
    gate.wait_for("modgate: metrics on ")
    found = re.findall(r"metrics on (http://[0-9.:]+)/metrics", gate.output())
    assert found, gate.output()
    with urllib.request.urlopen(f"{found[-1]}/metrics", timeout=30) as r:
        return str(r.read().decode())


def start(gate: Gate) -> Gate:
    """`gate`, to start with metrics on a port of its own (no race for a free one)."""
    gate.extra_args = ["--metrics-listen", "127.0.0.1:0"]
    return gate


def reload_rules(gate: Gate, text: str) -> None:
    seen = gate.output().count("modgate: reloaded")
    gate.rules.write_text(text)
    deadline = time.monotonic() + 15
    while gate.output().count("modgate: reloaded") == seen:
        assert time.monotonic() < deadline, gate.output()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sumdb(world: World) -> Iterator[TestSumdb]:
    with TestSumdb().add_world(world) as db:
        yield db


@pytest.fixture(scope="module")
def upstream(world: World) -> Iterator[Upstream]:
    with Upstream(world) as up:
        yield up


@pytest.fixture(scope="module")
def gate(
    upstream: Upstream, sumdb: TestSumdb, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gate]:
    g = Gate(tmp_path_factory.mktemp("fasthit") / "gate", rules(upstream.url, sumdb))
    with start(g):
        yield g


def _version(world: World, i: int = 0) -> ModuleVersion:
    return sorted(world, key=lambda mv: (mv.path, mv.version))[i]


@pytest.mark.parametrize("mode", MODES)
def test_a_reload_that_refuses_a_module_stops_its_fast_answers_at_once(
    gate: Gate, world: World, upstream: Upstream, sumdb: TestSumdb, mode: str
) -> None:
    mv = _version(world, 1 if mode == "endpoint" else 2)
    path = f"/{proxy_path(mv.path, mv.version, '.info')}"
    before = fast_answers(gate, mode)
    with client(gate, mode) as c:
        first = c.warm(path)  # the pipeline's hit
        second = c.request(path)  # the memo's
        assert first[0] == 200 and second == first
        assert fast_answers(gate, mode) >= before + 1
        try:
            reload_rules(gate, rules(upstream.url, sumdb, deny=mv.path))
            status, _, body = c.request(path)  # the same kept-alive connection
            assert status == 403 and b"gone" in body
        finally:
            reload_rules(gate, rules(upstream.url, sumdb))
        assert c.request(path) == first


def test_a_damaged_stored_body_is_never_what_the_fast_path_sends(gate: Gate, world: World) -> None:
    mv = _version(world, 3)
    rel = proxy_path(mv.path, mv.version, ".mod")
    with client(gate, "endpoint") as c:
        good = c.warm(f"/{rel}")
        assert good[0] == 200 and good[2] == mv.gomod
        assert c.request(f"/{rel}") == good  # held in memory and in the memo now
        # Damage it on disk (a small body lives in the database), and tell this modgate
        # its store changed elsewhere (what `modgate cache evict` does): the memory goes.
        db = sqlite3.connect(gate.cache_dir / "artifacts" / "cache.db")
        with db:
            changed = db.execute(
                "UPDATE Cache SET value = ? WHERE key = ?",
                (b"module evil\n" + b"x" * 9, f"v2 {rel}"),
            ).rowcount
        db.close()
        assert changed == 1
        # Until the memory goes, what is held (checked when it was read) is what is sent.
        assert c.request(f"/{rel}")[2] == mv.gomod
        (gate.cache_dir / "artifacts" / "evictions.stamp").touch()
        time.sleep(1.2)  # store.STAMP_EVERY
        status, fields, body = c.request(f"/{rel}")
    assert status == 200 and body == mv.gomod  # refetched, checked: never the damage
    assert dict(fields)["x-modgate-cache"] == "miss"


@pytest.mark.parametrize("mode", MODES)
def test_every_fast_answer_is_traced_and_counted(gate: Gate, world: World, mode: str) -> None:
    mv = _version(world, 4 if mode == "endpoint" else 5)
    path = f"/{proxy_path(mv.path, mv.version, '.mod')}"
    before = fast_answers(gate, mode)
    with client(gate, mode) as c:
        c.warm(path)
        answers = [c.request(path) for _ in range(6)]
    assert all(a == answers[0] and a[0] == 200 for a in answers)
    assert fast_answers(gate, mode) >= before + 5
    rows = gate.traced(
        "path = ? AND kind = 'mod' AND cache = 'hit'", (path,), lambda rows: len(rows) >= 7
    )
    assert len(rows) == 7, [dict(r) for r in rows]  # the pipeline's hit and six more
    same = ("kind", "module", "version", "status", "bytes_out", "cache", "upstream",
            "hash_verdict", "hash_source", "h1", "rule_verdict", "rule", "method", "host",
            "scheme", "port", "path", "bytes_in")  # fmt: skip
    assert len({tuple(r[k] for k in same) for r in rows}) == 1, [dict(r) for r in rows]
    assert rows[0]["cache"] == "hit" and rows[0]["hash_verdict"] == "verified"
    assert len({r["start"] for r in rows}) == 7  # each its own request


# Ways to spell a request: what the pipeline answers for each, the memo must too.
_SPELLINGS = st.sampled_from(
    ["plain", "slash", "bang", "dotdot", "double", "query", "upper", "dot"]
)
_EXTRA = st.lists(
    st.sampled_from([
        ("If-None-Match", '"x"'), ("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ("Accept-Encoding", "gzip"), ("Accept-Encoding", "identity"), ("Range", "bytes=0-3"),
        ("Via", "1.1 other"), ("Cache-Control", "no-cache"),
    ]),
    max_size=3, unique=True,
)  # fmt: skip


def _spell(rel: str, how: str) -> str:
    module, _, tail = rel.partition("/@v/")
    match how:
        case "slash":
            return "/" + rel.replace("/", "%2F", 1)
        case "bang":
            return "/" + rel.replace("!", "%21")
        case "dotdot":
            return f"/{module}/x/../@v/{tail}"
        case "double":
            return f"//{rel}"
        case "query":
            return f"/{rel}?go-get=1"
        case "upper":
            return "/" + rel.upper()
        case "dot":
            return f"/./{rel}"
    return f"/{rel}"


@pytest.mark.parametrize("mode", MODES)
def test_any_spelling_gets_from_the_memo_exactly_what_the_pipeline_answered(
    gate: Gate, world: World, mode: str
) -> None:
    versions = sorted(world, key=lambda mv: (mv.path, mv.version))
    before = fast_answers(gate, mode)
    with client(gate, mode) as c:

        @settings(max_examples=40, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.integers(0, len(versions) - 1), st.sampled_from([".info", ".mod"]),
               _SPELLINGS, _EXTRA, st.sampled_from(["GET", "GET", "HEAD"]))  # fmt: skip
        def check(i: int, ext: str, how: str, extra: list[tuple[str, str]], method: str) -> None:
            mv = versions[i]
            rel = proxy_path(mv.path, mv.version, ext)
            c.warm(f"/{rel}")  # stored: the rest are hits
            path = _spell(rel, how)
            answers = [c.request(path, *extra, method=method) for _ in range(3)]
            assert answers[1] == answers[0], (path, extra, method)
            assert answers[2] == answers[0], (path, extra, method)

        check()
    assert fast_answers(gate, mode) > before  # the memo did answer some of them


def test_a_revoked_token_stops_fast_answers_on_both_front_ends(
    world: World, upstream: Upstream, sumdb: TestSumdb, tmp_path: Path
) -> None:
    teams = "teams: teams.yaml\n"
    gate = Gate(tmp_path / "gate", rules(upstream.url, sumdb, teams))
    gate.home.mkdir(parents=True)
    (gate.home / "teams.yaml").write_text("teams:\n  team-b:\n    members:\n      bob: {}\n")
    gate.rules.write_text(gate.rules_text or "")
    made = subprocess.run(
        modgate_command("teams", "token", "create", "--rules", str(gate.rules), "team-b", "bob"),
        capture_output=True, text=True, timeout=60, cwd=gate.home, check=True,
    )  # fmt: skip
    token = made.stdout.strip()
    basic = "Basic " + base64.b64encode(f"bob:{token}".encode()).decode()
    mv = _version(world, 6)
    path = f"/{proxy_path(mv.path, mv.version, '.info')}"
    with start(gate):
        with client(gate, "endpoint") as e, client(gate, "proxy", basic) as p:
            for c, auth in ((e, ("Authorization", basic)), (p, ("X-Nothing", "-"))):
                for _ in range(100):  # misses until stored, the pipeline's hit, the memo's
                    status, fields, _ = c.request(path, auth)
                    assert status == 200
                    if fast_answers(gate, c.mode) >= 1:
                        break
                    time.sleep(0.05)
            assert fast_answers(gate, "endpoint") >= 1 and fast_answers(gate, "proxy") >= 1
            seen = gate.output().count("reloaded")
            subprocess.run(
                modgate_command("teams", "token", "revoke", "--rules", str(gate.rules), token[4:16]),
                check=True, capture_output=True, timeout=60, cwd=gate.home,
            )  # fmt: skip
            deadline = time.monotonic() + 15
            while gate.output().count("reloaded") == seen:
                assert time.monotonic() < deadline, gate.output()
                time.sleep(0.05)
            status, _, body = e.request(path, ("Authorization", basic))
            assert status == 401 and b"unknown or revoked token" in body
            status, _, body = p.request(path)  # the kept-alive tunnel is checked again
            assert status == 407 and b"unknown or revoked token" in body
        rows = gate.traced("path = ? AND status = 200", (path,), lambda rows: len(rows) >= 4)
        assert {r["identity"] for r in rows} == {"bob"} and {r["team"] for r in rows} == {"team-b"}


def test_a_warm_go_mod_download_is_answered_by_the_fast_path_and_fully_traced(
    world: World, upstream: Upstream, sumdb: TestSumdb, tmp_path: Path
) -> None:
    gate = Gate(tmp_path / "gate", rules(upstream.url, sumdb))
    root = graph_roots(world)[0]
    with start(gate):
        for run in ("cold", "warm", "warm2"):
            home = tmp_path / run
            home.mkdir()
            env = gate.client_env(go_env(home, f"https://{HOST}", GOSUMDB=sumdb.verifier_key),
                                  "goproxy")  # fmt: skip
            run_go(["mod", "download", "-json", f"{root}@latest"], env, home)
            if run == "cold":
                cold = fast_answers(gate, "endpoint")
        assert fast_answers(gate, "endpoint") > cold
        total = sum(
            s.value for family in text_string_to_metric_families(_scrape(gate))
            for s in family.samples if s.name == "modgate_requests_total"
        )  # fmt: skip
        rows = gate.traced("kind != 'tunnel'", (), lambda rows: len(rows) >= total)
        assert len(rows) == total
        downloaded = list((tmp_path / "warm2" / "gopath" / "pkg" / "mod" / "cache" / "download")
                          .rglob("*.mod"))  # fmt: skip
        assert downloaded
        for mod in downloaded:
            assert b"evil" not in mod.read_bytes()


@pytest.mark.parametrize("mode", MODES)
def test_a_head_answer_has_no_body_and_the_connection_keeps_its_framing(
    gate: Gate, world: World, mode: str
) -> None:
    # A HEAD is refused (405: the protocol is GET) with a head only (RFC 9110 §9.3.2):
    # through the HTTPS proxy the refusal's text used to follow it, so the next answer
    # on the connection was read from the middle of that text.
    mv = _version(world, 4)
    rel = f"/{proxy_path(mv.path, mv.version, '.info')}"
    with client(gate, mode) as c:
        good = c.warm(rel)
        for _ in range(20):
            status, fields, _ = c.request(rel, method="HEAD")
            assert status == 405 and ("content-type", "text/plain; charset=utf-8") in fields
            assert c.request(rel) == good  # nothing of the HEAD's answer is left over


def test_a_fault_in_the_endpoints_fast_path_leaves_the_answer_to_the_stages(
    world: World, upstream: Upstream, sumdb: TestSumdb, tmp_path: Path
) -> None:
    # The endpoint's shortcut is not trusted past an error in it: the request goes
    # through the stages (which fail closed if they must), and gets exactly what they
    # would have sent.
    faults = FaultInjector(tmp_path / "faults")
    g = Gate(tmp_path / "gate", rules(upstream.url, sumdb))
    g.env = faults.env
    mv = _version(world, 5)
    path = f"/{proxy_path(mv.path, mv.version, '.mod')}"
    with start(g), client(g, "endpoint") as c:
        good = c.warm(path)
        assert good[0] == 200 and good[2] == mv.gomod
        assert c.request(path) == good
        faults.arm("FastHitGate.endpoint")
        for _ in range(3):
            assert c.request(path) == good  # the stages', on the same connection
        assert "injected fault in FastHitGate.endpoint" in g.output()
        assert "internal error in the endpoint's fast path" in g.output()
        faults.arm("")
        assert c.request(path) == good
