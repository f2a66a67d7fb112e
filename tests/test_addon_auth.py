"""modgate.addons.auth.AuthGate at the unit level: mitmproxy's taddons and tflow behind the
real Pipeline, a real Settings with a rules file and teams file on disk."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons, tflow

from modgate.addons.auth import AuthGate
from modgate.addons.pipeline import Pipeline
from modgate.addons.settings import Settings
from modgate.teams import Authenticator, create_token, hash_password

PW = "pw-of-alice"
HASH = hash_password(PW)
RULES = """
proxies:
  - url: https://proxy.modgate.test
    upstream: http://127.0.0.1:9
checksum:
  databases: []
teams: teams.yaml
"""
TEAMS = f"""
teams:
  team-a:
    members:
      alice: {{password: "{HASH}"}}
"""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def run(tmp_path: Path, test: Callable[[Pipeline, AuthGate, Path], Coroutine[Any, Any, None]],
        rules: str = RULES) -> None:  # fmt: skip
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "teams.yaml").write_text(TEAMS)

    async def main() -> None:
        settings = Settings()
        gate = AuthGate(settings)
        pipeline = Pipeline([settings, gate])
        with taddons.context(pipeline) as tctx:
            tctx.configure(pipeline, modgate_rules=str(tmp_path / "rules.yaml"),
                           modgate_cache_dir=str(tmp_path / "cache"), modgate_goproxy="off",
                           modgate_gosumdb="off")  # fmt: skip
            try:
                await test(pipeline, gate, tmp_path / "teams.yaml")
            finally:
                await gate.done()
                await settings.done()

    asyncio.run(main())


def proxied(*auth: str) -> Any:
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse("regular")
    for value in auth:
        flow.request.headers.add("Proxy-Authorization", value)
    return flow


def test_an_accepted_request_carries_who_and_loses_the_header(tmp_path: Path) -> None:
    async def test(pipeline: Pipeline, gate: AuthGate, teams: Path) -> None:
        flow = proxied(basic("alice", PW))
        await pipeline.requestheaders(flow)  # type: ignore[attr-defined]
        assert flow.response is None
        assert (flow.metadata["modgate.identity"], flow.metadata["modgate.team"]) == (
            "alice",
            "team-a",
        )
        assert "Proxy-Authorization" not in flow.request.headers  # never sent upstream

    run(tmp_path, test)


def test_a_refusal_is_407_for_a_proxy_client_and_401_for_the_endpoint(tmp_path: Path) -> None:
    async def test(pipeline: Pipeline, gate: AuthGate, teams: Path) -> None:
        flow = proxied(basic("alice", "nope"))
        await pipeline.requestheaders(flow)  # type: ignore[attr-defined]
        assert flow.response.status_code == 407
        assert flow.response.headers["Proxy-Authenticate"].startswith('Basic realm="modgate"')
        assert flow.response.text == "modgate: wrong user name or password: not served\n"
        assert flow.metadata["modgate.identity"] == ""
        endpoint = tflow.tflow()
        endpoint.metadata["modgate.front"] = "endpoint"
        endpoint.request.headers["Proxy-Authorization"] = basic("alice", PW)  # the wrong header
        await pipeline.requestheaders(endpoint)  # type: ignore[attr-defined]
        assert endpoint.response.status_code == 401
        assert "WWW-Authenticate" in endpoint.response.headers

    run(tmp_path, test)


def test_an_exception_in_authentication_is_modgates_own_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Authenticator, values: list[str]) -> None:
        raise RuntimeError("hash library fell over")

    async def test(pipeline: Pipeline, gate: AuthGate, teams: Path) -> None:
        monkeypatch.setattr(Authenticator, "authenticate_fast", broken)
        flow = proxied(basic("alice", PW))
        await pipeline.requestheaders(flow)  # type: ignore[attr-defined]
        assert flow.response.status_code == 502
        assert "internal error" in flow.response.text and "not served" in flow.response.text
        assert flow.metadata["modgate.identity"] == ""  # nobody was let in
        connect = proxied(basic("alice", PW))
        connect.request.method = "CONNECT"
        await pipeline.http_connect(connect)  # type: ignore[attr-defined]
        assert connect.response.status_code == 502

    run(tmp_path, test)


def test_password_checks_run_off_the_event_loop_and_are_remembered(tmp_path: Path) -> None:
    async def test(pipeline: Pipeline, gate: AuthGate, teams: Path) -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        flow = proxied(basic("alice", PW))
        await pipeline.requestheaders(flow)  # type: ignore[attr-defined]
        slow = time.perf_counter() - started
        task.cancel()
        assert flow.metadata["modgate.team"] == "team-a"
        assert ticks >= 5  # the loop kept running while argon2 worked (~0.3 s)
        started = time.perf_counter()
        for _ in range(100):
            again = proxied(basic("alice", PW))
            await pipeline.requestheaders(again)  # type: ignore[attr-defined]
            assert again.metadata["modgate.team"] == "team-a"
        assert (time.perf_counter() - started) / 100 < slow / 20

    run(tmp_path, test)


def test_an_edited_teams_file_is_picked_up_and_a_broken_one_is_not(tmp_path: Path) -> None:
    async def test(pipeline: Pipeline, gate: AuthGate, teams: Path) -> None:
        await pipeline.running()  # type: ignore[attr-defined]
        await asyncio.sleep(1.2)  # the watcher has seen the file once
        secret, _ = create_token(teams, "team-a", "ci")
        for _ in range(40):
            flow = proxied(f"Bearer {secret}")
            await pipeline.requestheaders(flow)  # type: ignore[attr-defined]
            if flow.response is None:
                break
            await asyncio.sleep(0.1)
        assert flow.metadata["modgate.identity"] == "ci"
        teams.write_text("teams:\n  team-a:\n    members:\n      ci: {password: hunter2}\n")
        await asyncio.sleep(1.5)
        kept = proxied(f"Bearer {secret}")
        await pipeline.requestheaders(kept)  # type: ignore[attr-defined]
        assert kept.metadata["modgate.identity"] == "ci"  # the broken edit changed nothing

    run(tmp_path, test)


def test_without_teams_nothing_is_asked_or_removed(tmp_path: Path) -> None:
    async def test(pipeline: Pipeline, gate: AuthGate, teams: Path) -> None:
        flow = proxied(basic("someone", "x"))
        await pipeline.requestheaders(flow)  # type: ignore[attr-defined]
        assert flow.response is None and flow.metadata["modgate.team"] == ""
        assert "Proxy-Authorization" in flow.request.headers

    run(tmp_path, test, rules=RULES.replace("teams: teams.yaml\n", ""))


def test_a_remembered_password_is_forgotten_when_the_teams_file_changes(tmp_path: Path) -> None:
    async def test(pipeline: Pipeline, gate: AuthGate, teams: Path) -> None:
        await pipeline.running()  # type: ignore[attr-defined]
        first = proxied(basic("alice", PW))
        await pipeline.requestheaders(first)  # type: ignore[attr-defined]
        assert first.metadata["modgate.identity"] == "alice"
        assert gate.auth is not None and gate.auth.authenticate_fast([basic("alice", PW)])
        teams.write_text(TEAMS.replace(HASH, hash_password("a new password")))
        for _ in range(40):
            later = proxied(basic("alice", PW))
            await pipeline.requestheaders(later)  # type: ignore[attr-defined]
            if later.response is not None:
                break
            await asyncio.sleep(0.1)
        assert later.response is not None and later.response.status_code == 407
        assert later.response.text == "modgate: wrong user name or password: not served\n"

    run(tmp_path, test)


def test_transparent_mode_asks_for_authorization_with_401(tmp_path: Path) -> None:
    async def test(pipeline: Pipeline, gate: AuthGate, teams: Path) -> None:
        flow = tflow.tflow()
        flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse("transparent")
        flow.request.headers["Authorization"] = basic("alice", PW)
        await pipeline.requestheaders(flow)  # type: ignore[attr-defined]
        assert flow.response is None and flow.metadata["modgate.team"] == "team-a"
        assert "Authorization" not in flow.request.headers
        bare = tflow.tflow()
        bare.client_conn.proxy_mode = mode_specs.ProxyMode.parse("transparent")
        await pipeline.requestheaders(bare)  # type: ignore[attr-defined]
        assert bare.response is not None and bare.response.status_code == 401

    run(tmp_path, test)


def test_the_team_reaches_the_host_rules_of_a_connect(tmp_path: Path) -> None:
    from modgate.addons.rules import RulesGate

    (tmp_path / "rules.yaml").write_text(
        RULES + "hosts:\n  allow:\n    - {host: git.corp.example, teams: [team-a]}\n"
    )
    (tmp_path / "teams.yaml").write_text(TEAMS + "  team-b: {}\n")

    async def main() -> None:
        settings = Settings()
        pipeline = Pipeline([settings, AuthGate(settings), RulesGate(settings)])
        with taddons.context(pipeline) as tctx:
            tctx.configure(pipeline, modgate_rules=str(tmp_path / "rules.yaml"),
                           modgate_cache_dir=str(tmp_path / "cache"), modgate_goproxy="off",
                           modgate_gosumdb="off")  # fmt: skip
            secret, _ = create_token(tmp_path / "teams.yaml", "team-a", "ci")
            settings.reload()  # the new token, as the watcher would
            for auth, allowed in ((f"Bearer {secret}", True), (basic("alice", "nope"), False)):
                flow = proxied(auth)
                flow.request.method, flow.request.host, flow.request.port = (
                    "CONNECT",
                    "git.corp.example",
                    443,
                )
                await pipeline.http_connect(flow)  # type: ignore[attr-defined]
                assert (flow.response is None) == allowed, flow.response
            await settings.done()

    asyncio.run(main())
