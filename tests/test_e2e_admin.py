"""The admin API of a real `modgate run`, driven by `modgate admin`, by raw HTTP as an
attacker would, and by the README's curl snippet: signed requests do what the CLI
does; everything else gets the same 401, in the same envelope as every other answer."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modgate import adminauth
from world.admin import admin, admin_url, envelope, keygen
from world.gate import Gate, free_port
from world.gocmd import go_env, run_go
from world.modules import World, graph_roots
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

WORLD_MODULES = 6
HOST = "proxy.modgate.test"
README = Path(__file__).parent.parent / "README.md"


def rules_text(upstream: Upstream, db: TestSumdb) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
    )


@pytest.fixture
def running(world: World, tmp_path: Path) -> Iterator[tuple[Gate, Upstream, TestSumdb]]:
    with TestSumdb().add_world(world) as db, Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules_text(upstream, db))
        keygen(gate.confdir, "ops", "read", "cache", "rules")
        keygen(gate.confdir, "reader", "read")
        gate.extra_args = ["--admin-listen", "127.0.0.1:0"]
        with gate:
            yield gate, upstream, db


def download(gate: Gate, db: TestSumdb, home: Path, target: str) -> dict[str, str]:
    env = gate.client_env(go_env(home, f"https://{HOST}", GOSUMDB=db.verifier_key))
    home.mkdir(parents=True, exist_ok=True)
    info: dict[str, str] = json.loads(
        run_go(["mod", "download", "-json", target], env, home).stdout
    )
    return info


def raw(
    url: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url + path, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, data = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    answer: dict[str, Any] = json.loads(data)
    assert set(answer) == {"code", "message", "data"} and answer["code"] == status, answer
    return status, answer


def test_the_cli_signs_and_the_api_does_what_modgate_cache_does(
    running: tuple[Gate, Upstream, TestSumdb], world: World, tmp_path: Path
) -> None:
    gate, upstream, db = running
    info = download(gate, db, tmp_path / "a", f"{graph_roots(world)[0]}@latest")
    target = f"{info['Path']}@{info['Version']}"

    who = envelope(admin(gate, "whoami", key="reader"))
    assert who["data"] == {"admin": "reader", "scopes": ["read"]}
    stats = envelope(admin(gate, "cache", "stats"))
    assert stats["code"] == 200 and stats["data"]["by_kind"]["zip"][0] >= 1
    assert stats["data"]["hit_ratio"] is not None
    items = envelope(admin(gate, "cache", "ls", info["Path"]))["data"]
    assert {i["kind"] for i in items if i["version"] == info["Version"]} >= {"info", "mod", "zip"}

    refused = admin(gate, "cache", "evict", target, key="reader")  # no cache scope
    assert refused.returncode == 1 and envelope(refused)["code"] == 401
    assert envelope(admin(gate, "cache", "ls", info["Path"]))["data"] == items  # nothing gone

    before = upstream.count(f"*{info['Version']}.mod")
    evicted = admin(gate, "cache", "evict", target)
    assert evicted.returncode == 0 and envelope(evicted)["data"]["removed"] >= 3
    assert [
        i
        for i in envelope(admin(gate, "cache", "ls", info["Path"]))["data"]
        if i["version"] == info["Version"]
    ] == []
    import time

    time.sleep(1.2)  # the running modgate looks at the eviction stamp once a second
    download(gate, db, tmp_path / "b", target)
    assert upstream.count(f"*{info['Version']}.mod") > before  # fetched and checked again
    gone = admin(gate, "cache", "evict", "example.modgate.test/nothing@v1.0.0")
    assert gone.returncode == 1 and envelope(gone)["code"] == 404

    verify = envelope(admin(gate, "cache", "verify"))
    assert verify["code"] == 200 and verify["data"]["bad"] == [] and verify["data"]["checked"] > 0
    sessions = envelope(admin(gate, "trace", "ls", key="reader"))["data"]
    assert len(sessions) >= 1
    shown = envelope(admin(gate, "trace", "show", str(sessions[-1]["id"]), key="reader"))
    assert shown["code"] == 200 and shown["data"]["requests"]
    missing = admin(gate, "trace", "show", "999999", key="reader")
    assert envelope(missing)["code"] == 404

    purge = envelope(admin(gate, "cache", "purge", "*"))
    assert purge["code"] == 200 and purge["data"]["removed"] > 0
    left = envelope(admin(gate, "cache", "stats"))["data"]["by_kind"]
    assert set(left) <= {"sumdb-lookup", "sumdb-tile", "sumdb-latest"}  # proofs kept

    # The audit hook's line, for each change and each refusal.
    gate.wait_for("modgate: admin ops: cache.evict")
    gate.wait_for("modgate: admin reader: POST /v1/cache/evict")


def test_rules_reload_applies_now_or_says_why_not(
    running: tuple[Gate, Upstream, TestSumdb], world: World, tmp_path: Path
) -> None:
    gate, upstream, db = running
    shown = envelope(admin(gate, "rules", "show"))
    assert shown["data"]["text"] == gate.rules.read_text()
    module = graph_roots(world)[0]
    gate.rules.write_text(
        rules_text(upstream, db) + f"modules:\n  - deny: {module}\n    reason: frozen by ops\n"
    )
    reloaded = envelope(admin(gate, "rules", "reload"))
    assert reloaded["code"] == 200 and "1 module rules" in reloaded["message"], reloaded
    (tmp_path / "c").mkdir()
    env = gate.client_env(go_env(tmp_path / "c", f"https://{HOST}", GOSUMDB=db.verifier_key))
    denied = run_go(["mod", "download", f"{module}@latest"], env, tmp_path / "c", check=False)
    assert denied.returncode != 0 and "frozen by ops" in denied.stderr, denied.stderr
    gate.rules.write_text("proxies: [")  # broken: the rules in force stay, and it says why
    broken = admin(gate, "rules", "reload")
    assert broken.returncode == 1
    answer = envelope(broken)
    assert answer["code"] == 409 and "previous rules stay in force" in answer["message"]
    refused = admin(gate, "rules", "reload", key="reader")
    assert envelope(refused)["code"] == 401


def test_unsigned_forged_replayed_and_altered_requests_get_one_generic_401(
    running: tuple[Gate, Upstream, TestSumdb],
) -> None:
    gate, _, _ = running
    url = admin_url(gate)
    ops = adminauth.client_key((gate.confdir / "admin" / "ops.key").read_text(), "ops")
    body = json.dumps({"target": "example.modgate.test/m@v1.0.0"}).encode()
    path = "/v1/cache/evict"
    signed = adminauth.signed_headers(ops, "POST", path, body)
    forged = adminauth.AdminKey("ops", "0" * 64, frozenset())
    attempts = {
        "unsigned": ("POST", path, {}, body),
        "unsigned, unknown path": ("GET", "/v1/nothing", {}, b""),
        "unsigned, the dashboard": ("GET", "/dashboard", {}, b""),
        "wrong key": ("POST", path, adminauth.signed_headers(forged, "POST", path, body), body),
        "body altered": ("POST", path, signed, body.replace(b"v1.0.0", b"v1.0.1")),
        "path altered": ("POST", "/v1/cache/purge", signed, body),
        "expired": (
            "POST",
            path,
            adminauth.signed_headers(ops, "POST", path, body, now=__import__("time").time() - 400),
            body,
        ),
    }
    answers = {}
    for name, (method, target, headers, data) in attempts.items():
        status, answer = raw(url, method, target, headers, data)
        assert status == 401, name
        answers[name] = answer
    assert len({json.dumps(a, sort_keys=True) for a in answers.values()}) == 1  # nothing leaks
    status, first = raw(url, "POST", path, signed, body)
    assert status == 404  # accepted: nothing stored under that name
    status, replayed = raw(url, "POST", path, signed, body)
    assert status == 401 and replayed == answers["unsigned"]
    gate.wait_for("replayed request of 'ops'")

    def signed_raw(method: str, target: str, data: bytes = b"") -> tuple[int, dict[str, Any]]:
        return raw(url, method, target, adminauth.signed_headers(ops, method, target, data), data)

    assert signed_raw("GET", "/v1/nothing")[0] == 404
    status, answer = signed_raw("GET", path)
    assert status == 405 and "POST" in answer["message"]
    status, answer = signed_raw("POST", path, b"{not json")
    assert status == 400 and "not JSON" in answer["message"]
    status, answer = signed_raw("POST", path, b"{}")
    assert status == 400 and '"target"' in answer["message"]
    status, answer = signed_raw("GET", "/v1/cache/items?limit=0")
    assert status == 400 and "limit" in answer["message"]


def test_the_readme_curl_snippet_works(running: tuple[Gate, Upstream, TestSumdb]) -> None:
    gate, _, _ = running
    text = README.read_text()
    marker = text.index("tests/test_e2e_admin.py::test_the_readme_curl_snippet_works")
    snippet = text[
        text.index("```sh\n", marker) + 6 : text.index("```\n", text.index("```sh\n", marker) + 6)
    ]
    env = {**os.environ, "MODGATE_HOME": str(gate.confdir), "MODGATE_ADMIN_URL": admin_url(gate)}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", snippet],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    stats, evict = (json.loads(line) for line in done.stdout.splitlines() if line.strip())
    assert stats["code"] == 200 and "by_kind" in stats["data"]
    # Signed with its body: accepted, and nothing by that name is stored.
    assert evict["code"] == 404 and "example.com/m@v1.0.0" in evict["message"]


def test_one_admin_api_for_several_workers(world: World, tmp_path: Path) -> None:
    """Worker 0 alone serves it: a fixed port that two workers both bound without
    SO_REUSEPORT would stop the second one, and modgate with it."""
    with TestSumdb().add_world(world) as db, Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules_text(upstream, db), workers=2)
        keygen(gate.confdir, "ops", "read", "rules")
        port = free_port()
        gate.extra_args = ["--admin-listen", f"127.0.0.1:{port}"]
        with gate:
            assert len(gate.worker_pids()) == 2
            assert admin_url(gate) == f"http://127.0.0.1:{port}"
            reloaded = envelope(admin(gate, "rules", "reload"))
            assert reloaded["code"] == 200 and "other workers" in reloaded["message"]
            listening = [
                line for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
            ]  # fmt: skip
            assert len(listening) == 1


def test_no_keys_no_admin_api(world: World, tmp_path: Path) -> None:
    with TestSumdb().add_world(world) as db, Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules_text(upstream, db))
        gate.extra_args = ["--admin-listen", "127.0.0.1:0"]
        with gate:
            assert "admin API" not in gate.output()
