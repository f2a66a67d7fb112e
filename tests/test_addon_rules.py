"""modgate.addons.rules.RulesGate at the unit level: mitmproxy's taddons and tflow, a real
Settings with a rules file on disk; no network (the upstream is never reached)."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from modgate.addons.rules import RulesGate, read_settled
from modgate.addons.settings import Settings
from modgate.errors import ConfigError
from modgate.goproxy import parse_request
from modgate.store import DiskStore

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


# --- the watcher: a reload cannot weaken the policy by accident, and never stops watching ---


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("modgate.addons.rules.POLL_SECONDS", 0.02)
    monkeypatch.setattr("modgate.addons.rules.SETTLE_SECONDS", 0.02)


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        await asyncio.sleep(0.01)


async def zip_verdict(settings: Settings, gate: RulesGate, version: str = "v1.2.0") -> str:
    flow = module_flow(settings, f"example.com/lib/@v/{version}.zip")
    await gate.request(flow)
    return str(flow.metadata["modgate.rule"]["verdict"])


@pytest.mark.parametrize(
    "fault",
    [OSError(errno.ENOSPC, "No space left on device"), sqlite3.OperationalError("disk I/O error")],
)
@pytest.mark.parametrize("applied_first", [False, True], ids=["fails", "applies-then-fails"])
def test_a_reload_that_fails_to_apply_changes_nothing_and_the_watcher_keeps_watching(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    fast_watch: None, fault: Exception, applied_first: bool,
) -> None:  # fmt: skip
    """A full disk while the cache is resized: nothing of the edit applies (rules, cache
    settings, size limit, checker), the log says why, and the next valid edit applies."""
    resize = DiskStore.resize
    broken = {"on": True}

    def full_disk(store: DiskStore, size_limit: int) -> None:
        if not broken["on"]:
            return resize(store, size_limit)
        if applied_first:
            resize(store, size_limit)  # the new limit is written, then the disk fills
        raise fault

    monkeypatch.setattr(DiskStore, "resize", full_disk)

    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        assert settings.runtime is not None
        before = settings.runtime
        gate.running()
        edited = POLICY.replace('">=1.2.0"', '">=1.3.0"') + "cache:\n  size_limit: 1GB\n  ttl: 7s\n"
        with caplog.at_level(logging.INFO, "modgate"):
            rules.write_text(edited)
            await wait_for(lambda: "the previous rules stay in force" in caplog.text, "the error")
        assert f"{rules}: cache.size_limit: cannot resize the cache" in caplog.text
        assert str(fault) in caplog.text
        assert settings.runtime is before
        assert before.gateway.settings.ttl == 600 and before.gateway.validator is before.checker
        assert before.store._cache.size_limit == before.config.cache.size_limit
        before.checker.ledger.first_seen("x@v1.0.0", "h1:x")  # still open
        assert await zip_verdict(settings, gate) == "deny"
        assert gate._watch is not None and not gate._watch.done()

        broken["on"] = False
        rules.write_text(edited.replace("ttl: 7s", "ttl: 8s"))
        await wait_for(lambda: settings.runtime is not before, "the valid edit applied")
        assert settings.runtime.gateway.settings.ttl == 8
        assert settings.runtime.store._cache.size_limit == 10**9
        assert await zip_verdict(settings, gate) == "allow"  # now >=1.3.0 is denied
        await gate.done()

    run(tmp_path, POLICY, test)


def test_the_watcher_survives_any_error_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    fast_watch: None,
) -> None:  # fmt: skip
    calls = {"n": 0}
    real = Settings.reload

    def flaky(settings: Settings, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first reload after the start
            raise RuntimeError("something nobody expected")
        real(settings, *args)

    monkeypatch.setattr(Settings, "reload", flaky)

    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        gate.running()
        with caplog.at_level(logging.INFO, "modgate"):
            rules.write_text(POLICY + "mode: audit\n")
            await wait_for(lambda: "something nobody expected" in caplog.text, "the error")
            assert "RuntimeError" in caplog.text and "still watching" in caplog.text
            assert settings.runtime is not None and settings.runtime.config.rules.mode == "enforce"
            rules.write_text(POLICY + "mode: audit\n\n")
            await wait_for(lambda: settings.runtime is not None
                           and settings.runtime.config.rules.mode == "audit", "the second edit")  # fmt: skip
        await gate.done()

    run(tmp_path, POLICY, test)


@pytest.mark.parametrize(
    ("edited", "said"),
    [
        ("", "sets nothing but defaults"),
        ("\n# saving…\n", "sets nothing but defaults"),
        (POLICY[: POLICY.index("hosts:")], "it drops every host and module rule (hosts, modules are gone)"),
        (POLICY[: POLICY.index("modules:")] + "modules:\n", "modules: expected a list"),
        (POLICY[: POLICY.index("    versions")] + "    versions: \">=1.", "not valid YAML"),
        (POLICY + "cache:\n  size_limit: 100000000000000TB\n",
         "cache.size_limit: '100000000000000TB' is more than a cache can hold"),
    ],
    ids=["empty", "blank", "cut-after-checksum", "cut-after-modules", "cut-mid-string",
         "overflowing-size"],
)  # fmt: skip
def test_a_broken_empty_or_truncated_file_keeps_the_rules_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fast_watch: None, edited: str, said: str
) -> None:
    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        gate.running()
        with caplog.at_level(logging.INFO, "modgate"):
            rules.write_text(edited)
            await wait_for(lambda: "the previous rules stay in force" in caplog.text, "a refusal")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, caplog.text
        assert str(rules) in errors[0].getMessage() and said in errors[0].getMessage()
        assert "reloaded" not in caplog.text
        assert await zip_verdict(settings, gate) == "deny"
        gate.http_connect(flow := connect("vcs.modgate.test"))
        assert flow.response is not None and flow.response.status_code == 403

        with caplog.at_level(logging.INFO, "modgate"):
            rules.write_text("unrestricted: true\n" + POLICY[: POLICY.index("hosts:")])
            await wait_for(lambda: "reloaded" in caplog.text, "the marked edit applied")
        assert await zip_verdict(settings, gate) == "allow"
        await gate.done()

    run(tmp_path, POLICY, test)


def test_a_file_being_written_is_read_once_it_settles(tmp_path: Path, fast_watch: None) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"")

    async def main() -> None:
        async def write_slowly() -> None:
            for i in range(8):
                with path.open("ab") as f:
                    f.write(f"# line {i}\n".encode())
                await asyncio.sleep(0.01)

        writer = asyncio.create_task(write_slowly())
        data = await read_settled(str(path))
        await writer
        assert data == path.read_bytes()

        async def write_forever() -> None:
            while True:
                path.write_text(f"# {asyncio.get_running_loop().time()}\n")
                await asyncio.sleep(0.005)

        writer = asyncio.create_task(write_forever())
        with pytest.raises(ConfigError, match=re.escape(f"{path}: keeps changing")):
            await read_settled(str(path))
        writer.cancel()

    asyncio.run(main())


def test_a_failure_after_the_swap_does_not_claim_the_old_rules_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(settings: Settings) -> None:
        raise exceptions.OptionsError("allow_hosts and ignore_hosts are mutually exclusive")

    async def test(settings: Settings, gate: RulesGate, rules: Path) -> None:
        monkeypatch.setattr(Settings, "_limit_interception", refused)
        rules.write_text(POLICY + "mode: audit\n")
        with caplog.at_level(logging.ERROR, "modgate"):
            assert not gate.reload(str(rules))
        assert (
            f"{rules}: TLS interception could not be limited to the hosts the rules gate: "
            "allow_hosts and ignore_hosts are mutually exclusive; the new rules are in force"
        ) in caplog.text
        assert "previous rules stay" not in caplog.text

    run(tmp_path, POLICY, test)
