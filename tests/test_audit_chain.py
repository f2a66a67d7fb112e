"""The audit chain: each way of tampering with a log is found, and named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modgate.audit.chain import (
    GENESIS,
    BadLine,
    Head,
    Report,
    checkpoint_fields,
    decode,
    encode,
    lines,
    verify,
)
from modgate.audit.log import AuditLog, Pending, head_path, read_head

KEY = Ed25519PrivateKey.generate()


def build(path: Path, n: int = 10, every: int = 4) -> AuditLog:
    log = AuditLog(path, KEY, checkpoint_every=every, checkpoint_seconds=3600)
    for i in range(n):
        log.append([Pending(1000.0 + i, "served", {"module": f"m{i}", "v": "v1.0.0"}, f"r.{i}")])
    return log


def check(path: Path, key: Ed25519PrivateKey = KEY, head: bool = True) -> Report:
    with path.open("rb") as f:
        return verify(lines(f), key.public_key(), read_head(path) if head else None)


def rewrite(path: Path, change: object) -> None:
    """Apply `change` to the list of the log's lines (newlines kept)."""
    raw = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(change(raw)))  # type: ignore[operator]


def rechain(raw: list[bytes], start: int = 1) -> list[bytes]:
    """The lines from `start` on re-sequenced and re-hashed, as a careful forger would."""
    out, prev = [], GENESIS
    for i, line in enumerate(raw):
        o = json.loads(line)
        if i + 1 >= start:
            line, _ = encode(i + 1, o["time"], o["kind"], o["fields"], prev, o["id"])
        out.append(line)
        prev = decode(line.rstrip(b"\n")).hash
    return out


@pytest.fixture
def log(tmp_path: Path) -> Path:
    build(tmp_path / "audit.log").close()
    return tmp_path / "audit.log"


def test_a_clean_log_verifies_with_its_checkpoints_and_head(log: Path) -> None:
    report = check(log)
    assert report.ok, report.problem
    # 10 entries, a checkpoint on the first batch (no head yet) and every 4 after.
    assert report.checkpoints >= 3 and report.last_seq == report.entries
    assert read_head(log).seq == report.last_seq  # type: ignore[union-attr]


def test_an_edited_entry_is_named(log: Path) -> None:
    rewrite(log, lambda raw: [x.replace(b'"m1"', b'"mX"') for x in raw])
    report = check(log)
    assert report.problem and report.problem.line == 3  # line 2: the first checkpoint
    assert "content does not match its hash" in report.problem.reason


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(log: Path) -> None:
    def edit(raw: list[bytes]) -> list[bytes]:
        o = json.loads(raw[2])
        line, _ = encode(o["seq"], o["time"], o["kind"], {"module": "evil"}, o["prev"], o["id"])
        return [*raw[:2], line, *raw[3:]]

    rewrite(log, edit)
    report = check(log)
    assert report.problem and report.problem.line == 4
    assert "does not chain" in report.problem.reason


def test_an_edit_with_the_whole_chain_rewritten_fails_the_checkpoint_signature(log: Path) -> None:
    def edit(raw: list[bytes]) -> list[bytes]:
        raw[2] = raw[2].replace(b'"m1"', b'"mX"')
        return rechain(raw, start=3)

    rewrite(log, edit)
    report = check(log)
    assert report.problem is not None
    assert "checkpoint signature does not verify" in report.problem.reason


@pytest.mark.parametrize(
    "name, change, line, reason",
    [
        ("delete", lambda r: [*r[:3], *r[4:]], 4, "has seq 5"),
        ("insert", lambda r: [*r[:3], r[5], *r[3:]], 4, "has seq 6"),
        ("reorder", lambda r: [*r[:3], r[4], r[3], *r[5:]], 4, "has seq 5"),
        ("duplicate", lambda r: [*r[:4], r[3], *r[4:]], 5, "has seq 4"),
        ("garbage", lambda r: [*r[:3], b"hello\n", *r[3:]], 4, "no hash at its end"),
    ],
)
def test_deleted_inserted_reordered_entries_are_named(
    log: Path, name: str, change: object, line: int, reason: str
) -> None:
    rewrite(log, change)
    report = check(log)
    assert report.problem and report.problem.line == line, (name, report.problem)
    assert reason in report.problem.reason


def test_a_truncated_log_is_caught_by_the_head(log: Path) -> None:
    rewrite(log, lambda raw: raw[:-3])
    report = check(log)
    assert report.problem and "truncated" in report.problem.reason


def test_a_truncated_log_with_a_forged_head_is_caught(log: Path) -> None:
    rewrite(log, lambda raw: raw[:-3])
    entries = log.read_bytes().splitlines()
    last = decode(entries[-1])
    other = Ed25519PrivateKey.generate()
    head_path(log).write_bytes(Head.make(other, last.seq, last.hash, 0, 0).to_bytes())
    report = check(log)
    assert report.problem and "head's signature" in report.problem.reason


def test_a_whole_log_rewritten_without_checkpoints_and_head_missing(log: Path) -> None:
    rewrite(log, lambda raw: rechain([r for r in raw if b'"checkpoint"' not in r]))
    # With the head: its entry is not there.
    assert not check(log).ok
    head_path(log).unlink()
    report = check(log, head=False)
    assert report.ok and report.checkpoints == 0  # the CLI fails on a missing head


def test_a_forged_checkpoint_is_named(log: Path) -> None:
    other = Ed25519PrivateKey.generate()

    def forge(raw: list[bytes]) -> list[bytes]:
        for i, line in enumerate(raw):
            o = json.loads(line)
            if o["kind"] == "checkpoint":
                fields = checkpoint_fields(other, o["seq"] - 1, o["prev"])
                raw[i], _ = encode(o["seq"], o["time"], o["kind"], fields, o["prev"], o["id"])
                return rechain(raw, start=i + 2)
        raise AssertionError("no checkpoint")

    rewrite(log, forge)
    report = check(log)
    assert report.problem and "checkpoint signature" in report.problem.reason
    assert report.problem.line == 2  # the first batch's checkpoint


def test_the_wrong_public_key_fails_at_the_first_checkpoint(log: Path) -> None:
    report = check(log, key=Ed25519PrivateKey.generate())
    assert report.problem and "checkpoint signature" in report.problem.reason


def test_a_torn_tail_is_reported_then_recorded_by_the_next_writer(log: Path) -> None:
    with log.open("ab") as f:
        f.write(b'{"fields":{"module":"half')  # killed mid-write
    report = check(log)
    assert report.problem and "torn" in report.problem.reason
    size = log.stat().st_size
    writer = AuditLog(log, KEY)
    done = writer.append([Pending(2000.0, "start", {})])
    assert done.torn and "25 bytes" in done.torn
    report = check(log)
    assert report.ok, report.problem
    assert report.warnings and "torn write" in report.warnings[0]
    # The torn entry names the fragment exactly.
    torn = [json.loads(x) for x in log.read_bytes().splitlines() if b'"torn"' in x][0]
    assert torn["fields"]["offset"] == size - 25 and torn["fields"]["length"] == 25
    assert torn["fields"]["sha256"] == hashlib.sha256(b'{"fields":{"module":"half').hexdigest()


def test_a_bad_line_no_torn_entry_acknowledges_is_named(log: Path) -> None:
    with log.open("ab") as f:
        f.write(b'{"fields":{"module":"half')
    AuditLog(log, KEY).append([Pending(2000.0, "start", {})])
    # A forger who swaps the torn fragment for other bytes: the torn entry no longer matches.
    rewrite(log, lambda raw: [x.replace(b'"half', b'"hal!') for x in raw])
    report = check(log)
    assert report.problem and "no hash at its end" in report.problem.reason


def test_a_damaged_last_entry_stops_appending(log: Path) -> None:
    rewrite(log, lambda raw: [*raw[:-1], raw[-1].replace(b'"seq"', b'"seQ"')])
    from modgate.audit import AuditError

    with pytest.raises(AuditError, match="last entry .* is not valid"):
        AuditLog(log, KEY).append([Pending(1.0, "x", {})])


@pytest.mark.parametrize(
    "line",
    [b"", b"{}", b'{"a":1,"hash":"' + b"0" * 64 + b'"}', b"\xff" * 100, b'"}' * 50],
)
def test_decode_refuses_what_is_not_an_entry(line: bytes) -> None:
    with pytest.raises(BadLine):
        decode(line)


def test_hostile_strings_stay_inside_their_field() -> None:
    fields = {"module": 'x","kind":"forged\n\x1b[31m<script>', "h1": "\u2028"}
    line, digest = encode(1, 1.0, "served", fields, GENESIS)
    assert line.count(b"\n") == 1 and line.isascii()
    entry = decode(line.rstrip(b"\n"))
    assert entry.fields == fields and entry.kind == "served" and entry.hash == digest


@pytest.mark.parametrize(
    "fields, when, id",
    [
        ({}, 1.0, ""),
        ({"b": 1, "a": [1.5, None, True], "é": "\u2028\x00"}, 1765000000.1234567, "ab.12"),
        ({"nested": {"z": {"y": "x"}, "a": -0.0}}, 5, "r.1"),
    ],
)
def test_entries_built_from_pre_encoded_fields_are_the_canonical_json(
    fields: dict[str, object], when: float, id: str
) -> None:
    from modgate.audit.chain import canonical, encode_raw

    line, digest = encode_raw(3, when, "served", canonical(fields), GENESIS, id)
    body = line[: -len(',"hash":"') - 64 - 3] + b"}"
    whole = {"fields": fields, "id": id, "kind": "served", "prev": GENESIS, "seq": 3,
             "time": round(float(when), 6)}  # fmt: skip
    assert body == json.dumps(whole, sort_keys=True, separators=(",", ":")).encode()
    assert decode(line.rstrip(b"\n")).hash == digest


def test_entries_longer_than_the_tail_read_chain_on(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", KEY)
    log.append([Pending(1.0, "admin", {"blob": "x" * 50_000})])
    log.append([Pending(2.0, "admin", {"blob": "y" * 30_000})])
    with (tmp_path / "audit.log").open("ab") as f:
        f.write(b'{"fields":{"blob":"' + b"z" * 20_000)  # torn, and long
    log.append([Pending(3.0, "start", {})])
    report = check(tmp_path / "audit.log")
    assert report.ok and report.warnings, report.problem
