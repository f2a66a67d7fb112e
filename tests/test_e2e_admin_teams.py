"""The parts of issue 15 joined in one running modgate: an administrator creates a team
member's token through the signed admin API, go downloads with it, the administrator
revokes it and go is refused; the audit log holds both actions (and never the secret),
and the dashboard shows the teams and the audit log's state."""

from __future__ import annotations

import http.cookiejar
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from world.admin import admin, envelope, keygen, login_link
from world.gate import Gate, modgate_command
from world.gocmd import find_go, go_env
from world.modules import ModuleVersion, World
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
B_LIB = "corp.modgate.test/team-b/lib"
RULES = f"""
proxies:
  - url: https://{HOST}
    upstream: {{upstream}}
checksum:
  private: "*.modgate.test"
teams: teams.yaml
owners:
  - modules: corp.modgate.test/team-b
    teams: [team-b]
"""
TEAMS = "teams:\n  team-b:\n    members:\n      bob: {}\n"


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    tmp = tmp_path_factory.mktemp("adminteams")
    world = World([ModuleVersion(B_LIB, "v1.0.0")], workdir=tmp / "world")
    with world, Upstream(world) as upstream:
        gate = Gate(tmp / "gate", RULES.format(upstream=upstream.url))
        gate.home.mkdir(parents=True)
        (gate.home / "teams.yaml").write_text(TEAMS)
        keygen(gate.confdir, "ops", "read", "teams")
        keygen(gate.confdir, "reader", "read", "cache", "rules")  # every scope but teams
        gate.extra_args = ["--admin-listen", "127.0.0.1:0"]
        with gate:
            yield gate


def call(
    gate: Gate, method: str, path: str, body: object = None, key: str = "ops"
) -> dict[str, Any]:
    body_args = [json.dumps(body)] if body is not None else []
    return envelope(admin(gate, "call", method, path, *body_args, key=key))


def go_as(gate: Gate, home: Path, user: str, secret: str) -> subprocess.CompletedProcess[str]:
    (home / "home").mkdir(parents=True)
    env = gate.client_env(go_env(home, f"https://{HOST}", GOFLAGS="-modcacherw"), "proxy")
    parts = urlsplit(env["HTTPS_PROXY"])
    netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{parts.netloc}"
    env["HTTPS_PROXY"] = parts._replace(netloc=netloc).geturl()
    return subprocess.run([find_go(), "mod", "download", "-json", f"{B_LIB}@v1.0.0"], env=env,
                          cwd=home, capture_output=True, text=True, timeout=120)  # fmt: skip


def until(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return result


def test_a_token_made_and_revoked_through_the_api_works_then_stops_and_is_audited(
    gate: Gate, tmp_path: Path
) -> None:
    made = call(gate, "POST", "/v1/teams/tokens", {"team": "team-b", "member": "carol"})
    assert made["code"] == 200, made
    secret, token_id = made["data"]["secret"], made["data"]["id"]
    listed = call(gate, "GET", "/v1/teams/tokens")["data"]
    assert {"id": token_id, "team": "team-b", "member": "carol"}.items() <= listed[0].items()
    assert "secret" not in json.dumps(listed) and secret not in json.dumps(listed)

    # The teams file is read again within a second: then carol's token opens team-b's lib.
    tries: list[subprocess.CompletedProcess[str]] = []

    def go_ok() -> object:
        tries.append(go_as(gate, tmp_path / f"c{len(tries)}", "carol", secret))
        return tries[-1].returncode == 0 and tries[-1]

    ok = until(go_ok)
    assert '"Error"' not in ok.stdout

    revoked = call(gate, "POST", f"/v1/teams/tokens/{token_id}/revoke")
    assert revoked["code"] == 200, revoked
    refused = until(lambda: (d := go_as(gate, tmp_path / f"r{time.monotonic()}", "carol", secret))
                    .returncode != 0 and d)  # fmt: skip
    assert "modgate: unknown or revoked token" in refused.stdout + refused.stderr

    log = (gate.confdir / "audit.log").read_text()
    assert secret not in log
    exported = subprocess.run(
        modgate_command("audit", "export", "--since", "2000-01-01", "--confdir", str(gate.confdir)),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    actions = [e for e in map(json.loads, exported.splitlines()) if e["kind"] == "admin"]
    whats = [(a["fields"]["who"], a["fields"]["what"], a["fields"]["result"]) for a in actions]
    assert ("ops", "teams.token.create", "ok") in whats
    assert ("ops", "teams.token.revoke", "ok") in whats


def test_a_key_without_the_teams_scope_can_neither_see_nor_make_tokens(gate: Gate) -> None:
    before = call(gate, "GET", "/v1/teams/tokens")["data"]
    for method, path, body in (
        ("GET", "/v1/teams/tokens", None),
        ("GET", "/v1/teams", None),
        ("POST", "/v1/teams/tokens", {"team": "team-b", "member": "mallory"}),
        ("POST", "/v1/teams/tokens/000000000000/rotate", None),
    ):
        answer = call(gate, method, path, body, key="reader")
        assert answer["code"] == 401 and answer["data"] is None, answer
    assert call(gate, "GET", "/v1/teams/tokens")["data"] == before
    assert "mallory" not in (gate.home / "teams.yaml").read_text()


def test_inline_teams_or_a_wrong_team_are_refused_with_the_reason(gate: Gate) -> None:
    wrong = call(gate, "POST", "/v1/teams/tokens", {"team": "team-z", "member": "eve"})
    assert wrong["code"] == 400 and "no team 'team-z'" in wrong["message"]
    gone = call(gate, "POST", "/v1/teams/tokens/000000000000/revoke")
    assert gone["code"] == 400 and "no token" in gone["message"]


def test_the_dashboard_shows_the_teams_and_the_audit_log(gate: Gate) -> None:
    link = login_link(gate).splitlines()[-1]
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(link, timeout=30) as page:
        html = page.read().decode()
    assert "team-b" in html and "members, " in html and " tokens" in html, html
    assert "newest entry" in html and "audit.log" in html, html
