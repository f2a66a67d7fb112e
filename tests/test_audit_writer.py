"""The audit writer: one chain from many processes, no gap on kill -9, failures loud."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modgate.audit import keys
from modgate.audit.chain import lines, verify
from modgate.audit.log import read_head
from modgate.audit.writer import AuditWriter


def check(path: Path, key: Ed25519PrivateKey):  # type: ignore[no-untyped-def]
    with path.open("rb") as f:
        return verify(lines(f), key.public_key(), read_head(path))


def entries(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(x) for x in path.read_bytes().splitlines() if x.endswith(b"}")]


def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def _worker(confdir: str, name: str, n: int) -> None:
    key = keys.signing_key(Path(confdir))
    writer = AuditWriter(Path(confdir) / "audit.log", key, pace=0.001)
    writer.start()
    for i in range(n):
        writer.submit("served", {"worker": name, "i": i})
        if i % 7 == 0:
            time.sleep(0.001)
    writer.stop()


def test_processes_append_to_one_chain(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), f"w{i}", 300)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    key = keys.signing_key(tmp_path)  # one key for all: the first one made
    report = check(tmp_path / "audit.log", key)
    assert report.ok, report.problem
    served = [e for e in entries(tmp_path / "audit.log") if e["kind"] == "served"]
    assert len(served) == 1200
    assert {(e["fields"]["worker"], e["fields"]["i"]) for e in served} == {
        (f"w{w}", i) for w in range(4) for i in range(300)
    }
    assert (tmp_path / keys.KEY).stat().st_mode & 0o777 == 0o600
    assert report.checkpoints >= 4  # at least each worker's stop


def _killed_mid_write(confdir: str) -> None:
    """Writes a batch and is SIGKILLed half way through its write(2)."""
    key = keys.signing_key(Path(confdir))
    real = os.write

    def half(fd: int, data: bytes) -> int:
        if b'"victim"' in data and data.startswith(b"{"):  # the log's, not the journal's
            real(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real(fd, data)

    writer = AuditWriter(Path(confdir) / "audit.log", key, pace=0.001)
    writer.start()
    writer.submit("served", {"module": "before"})
    wait_for(lambda: writer.stats.written == 1)
    os.write = half  # type: ignore[assignment]
    writer.submit("served", {"module": "victim"})
    time.sleep(30)


def test_kill_9_mid_write_is_reported_and_the_entry_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = multiprocessing.get_context("spawn").Process(
        target=_killed_mid_write, args=(str(tmp_path),)
    )
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    log = tmp_path / "audit.log"
    key = keys.signing_key(tmp_path)
    report = check(log, key)
    assert report.problem and "torn" in report.problem.reason  # reported, not accepted
    # The next start: the torn line is recorded, and the lost entry comes back from the
    # killed process's journal.
    writer = AuditWriter(log, key)
    with caplog.at_level(logging.WARNING, "modgate"):
        writer.start()
        writer.submit("start", {})
        writer.stop()
    assert "torn line" in caplog.text and "1 appended now" in caplog.text
    report = check(log, key)
    assert report.ok, report.problem
    assert report.warnings and "torn write" in report.warnings[0]
    kinds = [(e["kind"], e["fields"].get("module")) for e in entries(log)]
    assert ("served", "victim") in kinds and kinds.count(("served", "before")) == 1
    assert writer.stats.torn == 1 and writer.stats.recovered == 1


def _killed_before_writing(confdir: str, written_too: bool) -> None:
    key = keys.signing_key(Path(confdir))
    writer = AuditWriter(Path(confdir) / "audit.log", key, pace=0.001)
    writer.start()
    if written_too:  # in the log, but killed before the journal was emptied
        os.ftruncate = lambda fd, n: None  # type: ignore[assignment]
        writer.submit("served", {"module": "both"})
        wait_for(lambda: writer.stats.written == 1)
    else:
        writer.pace = 3600  # never written
        writer.submit("served", {"module": "a"})
        writer.submit("served", {"module": "b"})
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("written_too", [False, True])
def test_kill_9_before_the_batch_loses_nothing_and_doubles_nothing(
    tmp_path: Path, written_too: bool
) -> None:
    p = multiprocessing.get_context("spawn").Process(
        target=_killed_before_writing, args=(str(tmp_path), written_too)
    )
    p.start()
    p.join(60)
    log, key = tmp_path / "audit.log", keys.signing_key(tmp_path)
    writer = AuditWriter(log, key)
    writer.start()
    writer.stop()
    modules = [e["fields"].get("module") for e in entries(log) if e["kind"] == "served"]
    assert modules == (["both"] if written_too else ["a", "b"])
    assert check(log, key).ok


def test_a_failing_log_is_loud_counted_unhealthy_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = Ed25519PrivateKey.generate()
    log = tmp_path / "audit.log"
    writer = AuditWriter(log, key, pace=0.001)
    writer.start()
    writer.submit("served", {"n": 1})
    wait_for(lambda: writer.stats.written == 1)
    good = log.read_bytes()
    log.write_bytes(good.replace(b'"seq"', b'"SEQ"'))  # damaged by someone
    with caplog.at_level(logging.ERROR, "modgate"):
        writer.submit("served", {"n": 2})
        wait_for(lambda: writer.stats.failures >= 1)
    assert not writer.healthy
    assert "cannot write the audit log" in caplog.text and "not valid" in caplog.text
    log.write_bytes(good)  # repaired: the waiting entry goes in
    wait_for(lambda: writer.healthy and writer.stats.written == 2)
    writer.stop()
    assert [e["fields"].get("n") for e in entries(log) if e["kind"] == "served"] == [1, 2]
    assert check(log, key).ok


def test_a_stopped_writer_counts_what_it_could_not_take(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.log", Ed25519PrivateKey.generate())
    writer.submit("served", {})
    assert writer.stats.dropped == 1 and "not running" in writer.stats.last_error


def test_the_signing_key_is_private_and_checked(tmp_path: Path) -> None:
    key = keys.signing_key(tmp_path)
    assert (tmp_path / keys.KEY).stat().st_mode & 0o777 == 0o600
    assert keys.load_public(tmp_path / keys.PUBLIC) == key.public_key()
    (tmp_path / keys.KEY).chmod(0o644)
    from modgate.audit import AuditError

    with pytest.raises(AuditError, match="readable by others; chmod 600"):
        keys.signing_key(tmp_path)


def test_a_write_cut_short_is_retried_without_doubling_what_got_in(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = tmp_path / "audit.log"
    writer = AuditWriter(log, key, pace=0.5)  # the three go in one batch
    real = os.write
    cut = {"done": False}

    def short(fd: int, data: bytes) -> int:
        if not cut["done"] and data.startswith(b"{") and b'"n":3' in data:
            cut["done"] = True
            first_two = data.index(b'"n":3')  # lines for n=1 and n=2 whole, n=3 torn
            return real(fd, data[: data.rindex(b"\n", 0, first_two) + 1] + b'{"fields":{"n":3')
        return real(fd, data)

    writer.start()
    os.write = short  # type: ignore[assignment]
    try:
        for n in (1, 2, 3):
            writer.submit("served", {"n": n})
        wait_for(lambda: writer.stats.failures == 1 and writer.healthy, timeout=15)
    finally:
        os.write = real  # type: ignore[assignment]
    writer.stop()
    served = [e["fields"]["n"] for e in entries(log) if e["kind"] == "served"]
    assert served == [1, 2, 3]
    report = check(log, key)
    assert report.ok and "torn write" in report.warnings[0]
