"""modgate.addons.rules.RulesGate at the unit level: mitmproxy's taddons and tflow, a real
Settings with a rules file on disk; no network (the upstream is never reached)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons, tflow

from modgate.addons.rules import RulesGate
from modgate.addons.settings import Settings
from modgate.goproxy import parse_request

PROXY = "proxy.modgate.test"
POLICY = f"""
proxies:
  - url: https://{PROXY}
    upstream: http://127.0.0.1:9
checksum:
  databases: []
hosts:
  allow: [git.modgate.test]
modules:
  - deny: example.com/lib
    versions: ">=1.2.0"
    name: pinned
    reason: "stay on v1.1.x"
"""


def run(
    tmp_path: Path,
    text: str,
    test: Callable[[Settings, RulesGate, Path], Coroutine[Any, Any, None]],
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)

    async def main() -> None:
        settings, gate = Settings(), RulesGate(Settings())
        gate.settings = settings
        with taddons.context(settings, gate) as tctx:
            tctx.configure(settings, modgate_rules=str(rules), modgate_cache_dir=str(tmp_path / "cache"),
                           modgate_goproxy="off", modgate_gosumdb="off")  # fmt: skip
            try:
                await test(settings, gate, rules)
            finally:
                await settings.done()

    asyncio.run(main())


def connect(host: str, port: int = 443) -> Any:
    flow = tflow.tflow()
    flow.request.method, flow.request.host, flow.request.port = "CONNECT", host, port
    return flow


def module_flow(settings: Settings, path: str) -> Any:
    flow = tflow.tflow()
    assert settings.runtime is not None
    flow.metadata["modgate.proxy"] = f"https://{PROXY}"
    flow.metadata["modgate.request"] = parse_request(path)
    flow.metadata["modgate.chain"] = settings.runtime.proxies[0].chain
    return flow


def test_connect_to_a_host_outside_the_allowlist_is_refused_in_the_status_line(
    tmp_path: Path,
) -> None:
    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        flow = connect("vcs.modgate.test")
        gate.http_connect(flow)
        assert flow.response.status_code == 403
        message = (
            "modgate: refused host vcs.modgate.test:443: rule hosts.default: only module proxies "
            "and the hosts in rules.yaml's hosts.allow may be reached"
        )
        assert flow.response.reason == message  # what go prints for a refused CONNECT
        assert flow.response.text == message + "\n"
        assert flow.metadata["modgate.rule"] == {
            "verdict": "deny", "rule": "hosts.default",
            "reason": "only module proxies and the hosts in rules.yaml's hosts.allow may be reached",
        }  # fmt: skip
        for allowed, rule in ((PROXY, "proxies"), ("git.modgate.test", "hosts.allow[0]")):
            flow = connect(allowed)
            gate.http_connect(flow)
            assert flow.response is None
            assert flow.metadata["modgate.rule"] == {"verdict": "allow", "rule": rule, "reason": ""}

    run(tmp_path, POLICY, test)


def test_a_refused_zip_gets_403_and_its_metadata_does_not(tmp_path: Path) -> None:
    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        flow = module_flow(settings, "example.com/lib/@v/v1.2.0.zip")
        await gate.request(flow)
        assert flow.response.status_code == 403
        assert flow.response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert flow.response.text == (
            'modgate: refused example.com/lib@v1.2.0: rule modules[0] "pinned": stay on v1.1.x\n'
        )
        assert flow.metadata["modgate.rule"] == {
            "verdict": "deny",
            "rule": "modules[0]",
            "reason": "stay on v1.1.x",
        }
        for path in (
            "example.com/lib/@v/v1.2.0.mod",
            "example.com/lib/@v/v1.2.0.info",
            "example.com/lib/@v/v1.1.0.zip",
        ):
            flow = module_flow(settings, path)
            await gate.request(flow)
            assert flow.response is None, path  # left for CacheGate
            assert flow.metadata["modgate.rule"]["verdict"] == "allow"

    run(tmp_path, POLICY, test)


def test_audit_mode_records_and_lets_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        flow = module_flow(settings, "example.com/lib/@v/v1.2.0.zip")
        with caplog.at_level(logging.WARNING, "modgate"):
            await gate.request(flow)
            gate.http_connect(c := connect("vcs.modgate.test"))
        assert flow.response is None and c.response is None
        assert flow.metadata["modgate.rule"]["verdict"] == "audit-deny"
        assert c.metadata["modgate.rule"]["verdict"] == "audit-deny"
        assert 'audit: would refuse example.com/lib@v1.2.0: rule modules[0] "pinned"' in caplog.text
        assert "audit: would refuse host vcs.modgate.test:443" in caplog.text

    run(tmp_path, POLICY + "mode: audit\n", test)


def test_reload_applies_a_valid_edit_and_keeps_the_rules_on_a_broken_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        async def verdict() -> str:
            flow = module_flow(settings, "example.com/lib/@v/v1.1.0.zip")
            await gate.request(flow)
            return str(flow.metadata["modgate.rule"]["verdict"])

        assert await verdict() == "allow"
        rules.write_text(POLICY.replace('">=1.2.0"', '">=1.1.0"'))
        gate.reload(str(rules))
        assert await verdict() == "deny"
        rules.write_text(POLICY.replace('">=1.2.0"', "'^v1.x'"))
        with caplog.at_level(logging.ERROR, "modgate"):
            gate.reload(str(rules))
        assert f"{rules}:11: modules[0].versions: '^v1.x' is not a version range" in caplog.text
        assert "the previous rules stay in force" in caplog.text
        assert await verdict() == "deny"

    run(tmp_path, POLICY, test)


def test_the_watcher_notices_an_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("modgate.addons.rules.POLL_SECONDS", 0.05)

    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        gate.running()
        await asyncio.sleep(0.1)
        assert settings.runtime is not None
        rules.write_text(POLICY + "mode: audit\n")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if str(settings.runtime.config.rules.mode) == "audit":
                break
        assert str(settings.runtime.config.rules.mode) == "audit"
        await gate.done()

    run(tmp_path, POLICY, test)
