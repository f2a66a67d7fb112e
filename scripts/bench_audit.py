"""Benchmark the audit log (issue 15).

    build    N entries appended by the real AuditLog in batches of 256 (checkpoints every
             1,000 and a signed head per batch, as modgate writes them): entries/s
    verify   `modgate audit verify` of those N entries, run as a user runs it (a new
             process), and the walk alone in-process: seconds, entries/s, MB/s
    submit   the event loop's share per audited request: `AuditWriter.submit` (the journal
             line and the queue), median of many

It prints a table and one JSON line. Numbers from a shared 2-core machine are rough.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modgate.audit import keys
from modgate.audit.chain import lines, verify
from modgate.audit.log import AuditLog, Pending, read_head
from modgate.audit.writer import AuditWriter

FIELDS = {
    "kind": "zip", "module": "github.com/some-org/some-module/v2", "version": "v2.13.1",
    "identity": "alice", "team": "platform", "client": "10.1.2.3", "port": 51234,
    "start": 1765000000.123456, "status": 200,
    "h1": "h1:3o5d2r2yMNtyU0k8yQk7m4Nx9nXbZ1sN6uC0oPZ3ZqE=", "verified": "verified",
    "by": "sumdb", "cache": "hit", "upstream": "https://proxy.corp.example",
}  # fmt: skip


def build(path: Path, confdir: Path, n: int) -> float:
    log = AuditLog(path, keys.signing_key(confdir))
    began = time.perf_counter()
    now = time.time()
    done = 0
    while done < n:
        batch = [Pending(now + (done + i) * 1e-4, "served", FIELDS, f"bench.{done + i}")
                 for i in range(min(256, n - done))]  # fmt: skip
        log.append(batch)
        done += len(batch)
    log.close()
    return time.perf_counter() - began


def submit_cost(confdir: Path, rounds: int = 20_000) -> float:
    writer = AuditWriter(confdir / "submit.log", keys.signing_key(confdir))
    writer.start()
    samples = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        writer.submit("served", FIELDS)
        samples.append(time.perf_counter_ns() - t)
    writer.stop()
    return statistics.median(samples) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        confdir = Path(tmp)
        path = confdir / "audit.log"
        print(f"bench_audit: appending {args.entries:,} entries ...", file=sys.stderr)
        built = build(path, confdir, args.entries)
        size = path.stat().st_size
        print("bench_audit: modgate audit verify ...", file=sys.stderr)
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "modgate", "audit", "verify", "--confdir", str(confdir)],
            capture_output=True, text=True,
        )  # fmt: skip
        cli = time.perf_counter() - t
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        t = time.perf_counter()
        with path.open("rb") as f:
            report = verify(lines(f), keys.load_public(confdir / keys.PUBLIC), read_head(path))
        walk = time.perf_counter() - t
        assert report.ok and report.last_seq >= args.entries, report.problem
        print("bench_audit: submit cost ...", file=sys.stderr)
        submit = submit_cost(confdir)
    n = report.last_seq
    rows = {
        "entries (with checkpoints)": f"{n:,}",
        "log size": f"{size / 1e6:.0f} MB ({size / n:.0f} bytes/entry)",
        "append (batches of 256)": f"{built:.1f} s ({args.entries / built:,.0f} entries/s)",
        "modgate audit verify": f"{cli:.1f} s ({n / cli:,.0f} entries/s, "
        f"{size / cli / 1e6:.0f} MB/s)",
        "verify walk in-process": f"{walk:.1f} s ({n / walk:,.0f} entries/s)",
        "submit per audited request": f"{submit:.1f} us (median, event loop)",
    }  # fmt: skip
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps({
        "entries": n, "bytes": size, "append_s": round(built, 2), "verify_cli_s": round(cli, 2),
        "verify_walk_s": round(walk, 2), "submit_us": round(submit, 2),
        "checkpoints": report.checkpoints,
    }))  # fmt: skip
    print(f"reproduce: scripts/bench_audit {shlex.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
