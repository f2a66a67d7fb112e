"""The Auditor's entries: what is recorded of a finished request, an admin action, a
reload; and what is not recorded at all."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from mitmproxy.test import taddons

from modgate.addons.audit import Auditor, entry_of
from modgate.trace.record import Record

BASE = Record(
    start=100.5, end=101.0, ttfb=0.1, client="10.0.0.7", client_port=4242, method="GET",
    scheme="https", host="proxy.example", port=443, path="/m/@v/v1.0.0.zip", kind="zip",
    module="example.com/m", version="v1.0.0", status=200, cache="miss",
    upstream="https://up.example", hash_verdict="verified", hash_source="sumdb",
    h1="h1:abc=",
)  # fmt: skip
TEAM = {"modgate.identity": "alice", "modgate.team": "team-a"}


@pytest.mark.parametrize(
    "changes, kind",
    [
        ({}, "served"),
        ({"kind": "mod"}, "served"),
        ({"kind": "info"}, None),  # not an artifact
        ({"status": 404}, None),  # not served
        (
            {"rule_verdict": "deny", "rule": "modules[2]", "rule_reason": "no", "status": 403},
            "refused",
        ),
        ({"hash_verdict": "mismatch", "error": "h1 differs", "status": 502}, "refused"),
        ({"kind": "tunnel", "rule_verdict": "deny", "rule": "hosts", "status": 403}, "refused"),
        ({"rule_verdict": "audit-deny"}, "served"),  # audit mode lets it through
    ],
)
def test_what_is_recorded(changes: dict[str, object], kind: str | None) -> None:
    entry = entry_of(BASE.replace(**changes), TEAM, None)
    assert (entry[0] if entry else None) == kind


def test_a_served_artifact_names_its_hash_what_verified_it_and_who() -> None:
    entry = entry_of(BASE, TEAM, None)
    assert entry is not None
    fields = entry[1]
    assert (
        fields["h1"] == "h1:abc=" and fields["verified"] == "verified" and fields["by"] == "sumdb"
    )
    assert (fields["identity"], fields["team"]) == ("alice", "team-a")
    assert (fields["start"], fields["port"]) == (100.5, 4242)  # the trace record's key


def test_a_refusal_names_the_rule_or_the_hash() -> None:
    by_rule = entry_of(
        BASE.replace(rule_verdict="deny", rule="modules[2]", rule_reason="CVE-1", status=403),
        {},
        None,
    )
    assert by_rule and by_rule[1]["rule"] == "modules[2]" and by_rule[1]["reason"] == "CVE-1"
    by_hash = entry_of(
        BASE.replace(hash_verdict="mismatch", error="h1 differs", status=502), {}, None
    )
    assert by_hash and by_hash[1]["hash"] == "mismatch" and "h1 differs" in by_hash[1]["reason"]
    assert by_hash[1]["identity"] == ""  # no teams stage: empty, not missing


def test_an_unverified_go_mod_is_hashed_for_the_entry() -> None:
    body = b"module example.com/m\n"
    entry = entry_of(BASE.replace(kind="mod", h1="", hash_verdict=""), {}, body)
    assert entry and entry[1]["h1"].startswith("h1:") and entry[1]["verified"] == "unverified"


def test_hostile_strings_are_bounded_and_kept_as_sent() -> None:
    hostile = "\x1b]0;pwned\x07<script>" + "x" * 5000
    entry = entry_of(BASE.replace(rule_verdict="deny", rule_reason=hostile, status=403), {}, None)
    assert (
        entry and entry[1]["reason"].startswith("\x1b]0;pwned") and len(entry[1]["reason"]) == 1024
    )


@dataclasses.dataclass
class Action:
    who: str
    what: str
    result: str


def test_admin_actions_reloads_start_and_stop_reach_the_log(tmp_path: Path) -> None:
    auditor = Auditor()
    with taddons.context(auditor) as tctx:
        tctx.configure(auditor, confdir=str(tmp_path))
        auditor.running()
        auditor.admin_action(Action("admin-1", "cache.evict example.com/m@v1.0.0", "ok"))
        auditor.admin_action({"who": "admin-2", "what": "rules.reload", "result": {"code": 0}})
        auditor.rules_reloaded("rules.yaml", b"\x01" * 32, b"\x02" * 32)
        auditor.done()
    lines = [json.loads(x) for x in (tmp_path / "audit.log").read_bytes().splitlines()]
    kinds = [e["kind"] for e in lines if e["kind"] != "checkpoint"]
    assert kinds == ["start", "admin", "admin", "rules-reload", "stop"]
    admin = [e["fields"] for e in lines if e["kind"] == "admin"]
    assert admin[0] == {
        "who": "admin-1",
        "what": "cache.evict example.com/m@v1.0.0",
        "result": "ok",
    }
    assert admin[1]["result"] == {"code": 0}
    reload = next(e["fields"] for e in lines if e["kind"] == "rules-reload")
    assert reload["old_sha256"] == "01" * 32 and reload["new_sha256"] == "02" * 32
    assert (tmp_path / "audit-signing.key").stat().st_mode & 0o777 == 0o600


def test_audit_off_writes_nothing(tmp_path: Path) -> None:
    auditor = Auditor()
    with taddons.context(auditor) as tctx:
        tctx.configure(auditor, confdir=str(tmp_path), modgate_audit=False)
        auditor.running()
        auditor.observe(BASE, {}, None)
        auditor.done()
    assert not (tmp_path / "audit.log").exists()
