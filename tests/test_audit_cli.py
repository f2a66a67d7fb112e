"""`modgate audit`: verify's exit codes and messages, export's filters and formats, pubkey."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from modgate.audit import keys
from modgate.audit.log import AuditLog, Pending, head_path
from modgate.audit_cli import parse_since
from modgate.cli import main


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path / "audit.log", keys.signing_key(tmp_path), checkpoint_every=3)
    for i, when in enumerate((1_000_000.0, 2_000_000.0, 3_000_000.0)):
        log.append(
            [Pending(when, "refused", {"module": f"m{i}", "reason": "=HYPERLINK(1)"}, f"x.{i}")]
        )
    log.close()
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_ok_names_the_counts(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--confdir", str(confdir))
    assert code == 0 and "OK: " in out and "checkpoints" in out
    code, out, _ = run(capsys, "verify", "--confdir", str(confdir), "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_verify_fails_on_an_edit_naming_the_entry(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = confdir / "audit.log"
    log.write_bytes(log.read_bytes().replace(b'"m1"', b'"m9"'))
    code, _, err = run(capsys, "verify", "--confdir", str(confdir))
    assert code == 1 and "first bad entry: entry 3" in err and "edited" in err
    code, out, _ = run(capsys, "verify", "--confdir", str(confdir), "--json")
    assert code == 1 and json.loads(out)["bad_seq"] == 3


def test_a_missing_head_fails_unless_told(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head_path(confdir / "audit.log").unlink()
    code, _, err = run(capsys, "verify", "--confdir", str(confdir))
    assert code == 1 and "is missing" in err and "--no-head" in err
    assert run(capsys, "verify", "--confdir", str(confdir), "--no-head")[0] == 0


def test_verify_with_another_key_fails(
    confdir: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path_factory.mktemp("other")
    keys.signing_key(other)
    code, _, err = run(
        capsys, "verify", "--confdir", str(confdir), "--pubkey", str(other / keys.PUBLIC)
    )
    assert code == 1 and "signature" in err


def test_export_since_and_csv_that_cannot_become_a_formula(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "export", "--confdir", str(confdir), "--since", "1970-01-24T00:00:00"
    )
    assert code == 0
    seqs = [json.loads(line)["fields"].get("module") for line in out.splitlines()]
    assert "m0" not in seqs and "m1" in seqs and "m2" in seqs
    code, out, _ = run(
        capsys, "export", "--confdir", str(confdir), "--since", "1970-01-01", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["module"] for r in rows if r["kind"] == "refused"] == ["m0", "m1", "m2"]
    assert all(r["reason"] == "'=HYPERLINK(1)" for r in rows if r["kind"] == "refused")


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", ""])
def test_since_must_be_a_date_or_a_duration(text: str) -> None:
    from modgate.audit import AuditError

    with pytest.raises(AuditError, match="not a date"):
        parse_since(text, 0.0)


def test_since_reads_durations_and_zones() -> None:
    assert parse_since("1h", 10_000.0) == 6400.0
    assert parse_since("1970-01-01T01:00:00+01:00", 0.0) == 0.0


def test_pubkey_prints_the_public_key(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "pubkey", "--confdir", str(confdir))
    assert code == 0 and out.encode() == (confdir / keys.PUBLIC).read_bytes()
    assert "PRIVATE" not in out


def test_no_log_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys.signing_key(tmp_path)
    code, _, err = run(capsys, "verify", "--confdir", str(tmp_path))
    assert code == 2 and "no audit log here" in err
