"""What metrics and the audit log add per request (issue 15); the budget is ~100 us.

    hooks     in-process, per finished request: `Metrics.observe` (one process, and in
              multi-process mode, where each value is an mmap'd file), and the Auditor's
              entry for an artifact served (`entry_of` and `AuditWriter.submit`: the
              journal line and the queue); medians of many
    e2e       one `modgate run` per setting (audit off + metrics off, twice: the noise
              floor; audit on; audit and metrics on), a cached .mod asked again and again
              over one keep-alive connection to the GOPROXY endpoint; rounds interleaved
              in a new random order each, median latency

It prints a table and one JSON line. Numbers from a shared 2-core machine are rough.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]

from modgate.trace.record import Record  # noqa: E402

RECORD = Record(
    start=time.time(), end=time.time() + 0.001, ttfb=0.0005, client="127.0.0.1",
    client_port=40000, method="GET", scheme="https", host="proxy.example", port=443,
    path="/example.com/m/@v/v1.0.0.mod", kind="mod", module="example.com/m", version="v1.0.0",
    status=200, bytes_in=140, bytes_out=120, cache="hit", upstream="https://proxy.example",
    hash_verdict="verified", hash_source="sumdb", h1="h1:" + "A" * 43 + "=",
)  # fmt: skip
META = {"modgate.team": "platform", "modgate.identity": "alice"}


def _median_us(fn: object, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


def hooks(rounds: int) -> dict[str, float]:
    from modgate.addons.audit import entry_of
    from modgate.audit import keys
    from modgate.audit.writer import AuditWriter
    from modgate.metrics import Metrics

    metrics = Metrics()
    out = {"metrics_observe_us": _median_us(lambda: metrics.observe(RECORD, META, None), rounds)}
    with tempfile.TemporaryDirectory() as tmp:
        writer = AuditWriter(Path(tmp) / "audit.log", keys.signing_key(Path(tmp)))
        writer.start()

        def audit() -> None:
            kind, fields = entry_of(RECORD, META, None)  # type: ignore[misc]
            writer.submit(kind, fields, RECORD.end)

        out["audit_entry_us"] = _median_us(audit, rounds)
        writer.stop()
    return out


def hooks_multiprocess(rounds: int) -> float:
    """Metrics.observe in multi-process mode: a fresh interpreter with the variable set
    before prometheus-client is imported, as a worker has it."""
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import sys; sys.path[:0] = [sys.argv[1]]; import bench_metrics as b; "
            "from modgate.metrics import Metrics; m = Metrics(); "
            "print(b._median_us(lambda: m.observe(b.RECORD, b.META, None), int(sys.argv[2])))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(REPO / "scripts"), str(rounds)],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": tmp}, capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        return float(done.stdout.strip())


SETTINGS = {
    "baseline": ["--set", "modgate_audit=false"],
    # The same again: how far two identical modgates differ here (the noise floor).
    "baseline again": ["--set", "modgate_audit=false"],
    "audit": [],
    "audit+metrics": ["--metrics-listen", "0"],
}


def e2e(requests: int, rounds: int) -> dict[str, float]:
    import psutil

    from world.gate import Gate
    from world.modules import graph, proxy_path
    from world.upstream import Upstream

    host = "proxy.modgate.test"
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        world = graph(n_modules=6, workdir=Path(tmp) / "world")
        module = world.modules()[0]
        version = world.versions(module)[0].version
        with Upstream(world) as upstream:
            gates = {}
            try:
                for name, extra in SETTINGS.items():
                    rules = (f"proxies:\n  - url: https://{host}\n    upstream: {upstream.url}\n"
                             "checksum:\n  databases: []\n")  # fmt: skip
                    gate = Gate(Path(tmp) / name, rules)
                    gate.extra_args = [*extra, "--quiet"]
                    gates[name] = gate.start()
                samples: dict[str, list[float]] = {n: [] for n in gates}
                cpu: dict[str, float] = dict.fromkeys(gates, 0.0)
                procs = {n: psutil.Process(g.proc.pid) for n, g in gates.items()}  # type: ignore[union-attr]
                path = "/" + proxy_path(module, version, ".mod")
                order = list(gates)
                for _ in range(rounds):
                    random.shuffle(order)  # no setting always first, or always after another
                    for name in order:
                        before = sum(procs[name].cpu_times()[:2])
                        samples[name].extend(_latencies(gates[name].goproxy_url, path, requests))
                        cpu[name] += sum(procs[name].cpu_times()[:2]) - before
                median = {n: statistics.median(s) * 1e6 for n, s in samples.items()}
                per_request = {f"{n} cpu": c / (rounds * requests) * 1e6 for n, c in cpu.items()}
                return median | per_request
            finally:
                for gate in gates.values():
                    gate.stop()
        world.close()


def _latencies(base: str, path: str, n: int) -> list[float]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    out = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
            out.append(time.perf_counter() - t)
    finally:
        conn.close()
    return out[10:]  # the first ones fill the cache and warm up


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="per round and setting")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("bench_metrics: hooks in-process ...", file=sys.stderr)
    result = hooks(50_000)
    result["metrics_observe_multiprocess_us"] = hooks_multiprocess(50_000)
    print("bench_metrics: end to end ...", file=sys.stderr)
    latency = e2e(args.requests, args.rounds)
    base, base_cpu = latency["baseline"], latency["baseline cpu"]
    rows = {
        "Metrics.observe (one process)": f"{result['metrics_observe_us']:.1f} us",
        "Metrics.observe (multi-process)": f"{result['metrics_observe_multiprocess_us']:.1f} us",
        "audit entry (entry_of + submit)": f"{result['audit_entry_us']:.1f} us",
        **{f"cached .mod, {name}": f"{us:.0f} us median ({us - base:+.0f} us)"
           for name, us in latency.items() if not name.endswith(" cpu")},
        **{f"server CPU per request, {name.removesuffix(' cpu')}":
           f"{us:.0f} us ({us - base_cpu:+.0f} us)"
           for name, us in latency.items() if name.endswith(" cpu")},
    }  # fmt: skip
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps({**{k: round(v, 2) for k, v in result.items()},
                      "e2e_median_us": {k: round(v, 1) for k, v in latency.items()}}))  # fmt: skip
    print(f"reproduce: scripts/bench_metrics {shlex.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
