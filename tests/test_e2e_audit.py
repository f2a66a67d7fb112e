"""The audit log end to end: the real go command through a real `modgate run`, both
front ends, then `modgate audit` run as a user runs it. The entries are checked against
the trace database (each served .mod and .zip once, with its h1), and tampering with
the file on disk makes verify fail naming the entry."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from world.gate import Gate, modgate_command
from world.gocmd import go_env, run_go
from world.modules import DOMAIN, ModuleVersion, World, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
LIB = f"{DOMAIN}/lib"
OTHER = f"{DOMAIN}/other"
HOSTILE_REASON = "=cmd|' /C calc'!A0 \x1b[31mred\x1b[0m <script>alert(1)</script>"


def rules(upstream: str, deny: str = "v1.2.0") -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
        f"checksum:\n  private: {DOMAIN!r}\n"
        f"modules:\n  - deny: {LIB}\n    versions: {deny!r}\n    name: no-lib\n"
        f"    reason: {json.dumps(HOSTILE_REASON)}\n"
    )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World(
        [ModuleVersion(LIB, v) for v in ("v1.1.0", "v1.2.0")] + [ModuleVersion(OTHER, "v0.1.0")]
    ) as w:
        yield w


def audit(gate: Gate, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        modgate_command("audit", *args, "--confdir", str(gate.confdir)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def entries(gate: Gate) -> list[dict[str, Any]]:
    out = audit(gate, "export", "--since", "2000-01-01").stdout
    return [json.loads(line) for line in out.splitlines()]


def wait_entries(gate: Gate, pred: Any, timeout: float = 15) -> list[dict[str, Any]]:
    """The entries `pred` holds of, once there is one (the writer batches) or `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        log_there = (gate.confdir / "audit.log").exists()
        found = [e for e in entries(gate) if pred(e)] if log_there else []
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def wait_count(gate: Gate, kind: str, n: int, timeout: float = 15) -> None:
    """Wait until the log holds at least `n` entries of `kind`."""
    deadline = time.monotonic() + timeout
    while sum(e["kind"] == kind for e in wait_entries(gate, lambda e: True)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} {kind} entries"
        time.sleep(0.2)


def test_served_and_refused_through_both_front_ends_match_the_trace(
    world: World, tmp_path: Path
) -> None:
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream.url)) as gate:
        app = write_main_module(world, tmp_path / "app", imports=[OTHER])
        for mode in ("proxy", "goproxy"):
            env = gate.client_env(go_env(tmp_path / mode, f"https://{HOST}"), mode)
            run_go(["get", f"{LIB}@v1.1.0"], env, app.dir)
            refused = run_go(["get", f"{LIB}@v1.2.0"], env, app.dir, check=False)
            assert refused.returncode != 0 and "403" in refused.stderr
        rows = gate.traced(
            "kind IN ('mod', 'zip') AND status = 200", (), lambda rows: len(rows) >= 6
        )
        wait_count(gate, "refused", 2)
        wait_count(gate, "served", len(rows))
        served = [e for e in entries(gate) if e["kind"] == "served"]
        # One entry per artifact served, keyed as the trace record is: none twice, none missing.
        assert sorted((e["fields"]["start"], e["fields"]["port"]) for e in served) == sorted(
            (r["start"], r["client_port"]) for r in rows
        )
        by_key = {(r["start"], r["client_port"]): r for r in rows}
        for e in served:
            r, f = by_key[(e["fields"]["start"], e["fields"]["port"])], e["fields"]
            assert (f["kind"], f["module"], f["version"]) == (r["kind"], r["module"], r["version"])
            assert f["h1"] and f["h1"] == r["h1"]
            assert f["verified"] == (r["hash_verdict"] or "unverified")
            assert f["identity"] == "" and f["team"] == ""  # no teams here
        lib_zip = next(
            e for e in served if e["fields"]["module"] == LIB and e["fields"]["kind"] == "zip"
        )
        assert lib_zip["fields"]["h1"] == world.get(LIB, "v1.1.0").zip_hash
        refused_entries = [e for e in entries(gate) if e["kind"] == "refused"]
        assert len(refused_entries) >= 2  # through the proxy and through the endpoint
        assert all(e["fields"]["rule"] == "modules[0]" for e in refused_entries)
        assert all(e["fields"]["version"] == "v1.2.0" for e in refused_entries)
        assert HOSTILE_REASON in refused_entries[0]["fields"]["reason"]  # as written, JSON-escaped

        # A rules edit is recorded with the old and new content hashes.
        import hashlib

        old = hashlib.sha256(gate.rules.read_bytes()).hexdigest()
        gate.rules.write_text(rules(upstream.url, deny="v1.1.0"))
        new = hashlib.sha256(gate.rules.read_bytes()).hexdigest()
        reload = wait_entries(gate, lambda e: e["kind"] == "rules-reload")
        assert reload and reload[0]["fields"]["old_sha256"] == old
        assert reload[0]["fields"]["new_sha256"] == new

        # `trace show` links each artifact's request to its entry.
        shown = subprocess.run(
            modgate_command("trace", "show", "last", "--db", str(gate.home / "trace.db"),
                            "--audit-log", str(gate.confdir / "audit.log")),
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert "AUDIT" in shown
        seqs = {str(e["seq"]) for e in served + refused_entries}
        assert any(f"#{s}" in shown for s in seqs), shown

        report = json.loads(audit(gate, "verify", "--json").stdout)
        assert report["ok"] and report["checkpoints"] >= 1
    kinds = [e["kind"] for e in entries(gate)]
    assert kinds[0] == "start" and kinds[-1] == "checkpoint" and kinds[-2] == "stop"
    assert audit(gate, "verify").returncode == 0

    # CSV for a spreadsheet: a hostile reason cannot become a formula.
    rows_csv = list(csv.DictReader(io.StringIO(audit(gate, "export", "--since", "1d",
                                                     "--format", "csv").stdout)))  # fmt: skip
    refused_row = next(r for r in rows_csv if r["kind"] == "refused")
    assert refused_row["reason"].startswith("'=cmd")

    # Tampering on disk: an artifact's h1 changed, the hash recomputed by a careless forger.
    log = gate.confdir / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b'"served"' in line)
    lines[i] = lines[i].replace(b'"h1":"h1:', b'"h1":"h1:AAAA')
    log.write_bytes(b"".join(lines))
    done = audit(gate, "verify", ok=False)
    assert done.returncode == 1
    assert f"line {i + 1}" in done.stderr and "edited" in done.stderr


def test_a_gate_that_must_record_refuses_what_it_cannot(world: World, tmp_path: Path) -> None:
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules(upstream.url))
        gate.extra_args = ["--set", "modgate_audit_required=true"]
        with gate:
            url = f"{gate.goproxy_url}/{LIB}/@v/v1.1.0.mod"
            urllib.request.urlopen(url).close()
            wait_entries(gate, lambda e: e["kind"] == "served")
            log = gate.confdir / "audit.log"
            log.write_bytes(log.read_bytes().replace(b'"seq"', b'"SEQ"'))  # damaged
            urllib.request.urlopen(f"{gate.goproxy_url}/{OTHER}/@v/v0.1.0.mod").close()
            gate.wait_for("cannot write the audit log")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{gate.goproxy_url}/{OTHER}/@v/v0.1.0.info")
            assert refused.value.code == 503
            assert b"cannot record the audit log" in refused.value.read()


def test_workers_share_one_chain(world: World, tmp_path: Path) -> None:
    with (
        Upstream(world) as upstream,
        Gate(tmp_path / "gate", rules(upstream.url), workers=2) as gate,
    ):
        for n in range(3):
            app = write_main_module(world, tmp_path / f"app{n}", imports=[OTHER])
            env = gate.client_env(go_env(tmp_path / f"c{n}", f"https://{HOST}"), "goproxy")
            run_go(["get", f"{LIB}@v1.1.0"], env, app.dir)
        rows = gate.traced("kind IN ('mod', 'zip') AND status = 200", (), lambda r: len(r) >= 12)
        wait_count(gate, "served", len(rows))
    all_entries = entries(gate)
    assert sum(e["kind"] == "start" for e in all_entries) == 2
    assert sum(e["kind"] == "served" for e in all_entries) == len(rows)
    assert json.loads(audit(gate, "verify", "--json").stdout)["ok"]


def test_kill_9_loses_no_entry(world: World, tmp_path: Path) -> None:
    """modgate killed right after go finished, before its last batches were chained: the
    next start appends them from the journal; verify passes and the log matches the
    trace, one entry per artifact served."""
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules(upstream.url)).start()
        app = write_main_module(world, tmp_path / "app", imports=[OTHER])
        env = gate.client_env(go_env(tmp_path / "c", f"https://{HOST}"), "goproxy")
        run_go(["get", f"{LIB}@v1.1.0"], env, app.dir)
        assert gate.proc is not None
        gate.proc.kill()  # SIGKILL: no stop entry, no final batch
        gate.proc.wait()
        gate.proc = None
        with gate:
            rows = gate.traced("kind IN ('mod', 'zip') AND status = 200", (), lambda r: len(r) >= 4)
            wait_count(gate, "served", len(rows))
    log = entries(gate)
    served = sorted(
        (e["fields"]["start"], e["fields"]["port"]) for e in log if e["kind"] == "served"
    )
    assert served == sorted((r["start"], r["client_port"]) for r in rows)
    assert [e["kind"] for e in log].count("start") == 2
    assert [e["kind"] for e in log].count("stop") == 1  # the killed run has none
    assert json.loads(audit(gate, "verify", "--json").stdout)["ok"]
