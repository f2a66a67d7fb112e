"""Benchmark the trace (issue 5): queries at 100,000 records, and what recording costs.

    store     100,000 records written by the real writer in sessions of 200; its
              throughput, and the latency of a lone record from submit to commit
    queries   `modgate trace ls`, `show last` and `show` of the largest session, run as a
              user runs them (a new process each; `modgate --version` for the start-up
              alone), and the same queries in-process
    hook      event-loop time of the addon's response hook per request (in-process):
              building the record, the journal append, queueing
    overhead  end to end: mitmdump with modgate's addons answering small cached
              requests, with the trace off; on (quiet, as `modgate run --quiet`); on with
              the live line printed. Latency on one keep-alive connection, one request at
              a time, and requests/s over 8 connections; rounds interleaved, medians
              compared.

It prints a table and one JSON line. Run `scripts/bench_trace` (`--quick` for a
smaller run); numbers from a shared 2-core machine are rough.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]

from modgate.trace.record import Record  # noqa: E402
from modgate.trace.report import show_text  # noqa: E402
from modgate.trace.store import TraceDB  # noqa: E402
from modgate.trace.writer import TraceWriter  # noqa: E402

HOST = "proxy.modgate.test"
MODULE = "example.modgate.test/bench"
KINDS = ("list", "info", "mod", "zip", "sumdb-lookup")


def synthetic(n: int, per_session: int) -> list[Record]:
    """`n` records: sessions of `per_session` requests 60 s apart, 10 ms between requests,
    over 40 clients, with the outcomes a real download has."""
    t0 = time.time() - 7 * 86400
    out = []
    for i in range(n):
        session, k = divmod(i, per_session)
        start = t0 + session * 60.0 + k * 0.01
        kind = KINDS[k % len(KINDS)]
        out.append(
            Record(
                start=start, end=start + 0.008, ttfb=0.004, client=f"10.0.0.{session % 40}",
                client_port=40000 + k, method="GET", scheme="https", host=HOST, port=443,
                path=f"/{MODULE}{k // 5}/@v/v1.0.{k}.{kind}", kind=kind,
                module=f"{MODULE}{k // 5}", version=f"v1.0.{k}", status=200, bytes_in=140,
                bytes_out=2000 if kind == "zip" else 120, cache="hit" if session % 3 else "miss",
                upstream="https://mirror.example", attempts=("https://mirror.example: 200",),
                hash_verdict="verified", hash_source="sumdb", h1="h1:" + "A" * 43 + "=",
            )
        )  # fmt: skip
    return out


def fill(db: Path, n: int, per_session: int) -> dict[str, float]:
    records = synthetic(n, per_session)
    writer = TraceWriter(db, gap=10.0)
    writer.start()
    began = time.perf_counter()
    for r in records:
        writer.submit(r)
    writer.stop(timeout=600)
    took = time.perf_counter() - began
    busy = writer.stats.busy / max(1, writer.stats.written)
    return {"records": n, "seconds": took, "per_s": n / took, "busy_us_per_record": busy * 1e6}


def commit_latency(db: Path, n: int) -> dict[str, float]:
    """One record at a time, each waited for: how soon `modgate trace` can see it."""
    writer = TraceWriter(db, gap=10.0)
    writer.start()
    r = synthetic(1, 1)[0]
    done = threading.Event()
    samples = []
    for i in range(n):
        done.clear()
        began = time.perf_counter()
        writer.submit(r.replace(start=r.start + i), done=lambda _e: done.set())
        done.wait(10)
        samples.append(time.perf_counter() - began)
    writer.stop()
    return {"median_us": statistics.median(samples) * 1e6,
            "p95_us": sorted(samples)[int(0.95 * n)] * 1e6}  # fmt: skip


def command_seconds(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "modgate", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def queries(db: Path, repeat: int) -> dict[str, float]:
    conn = TraceDB(db, create=False)
    largest = conn.conn.execute(
        "SELECT session FROM requests GROUP BY session ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()[0]
    out: dict[str, float] = {"largest_session": largest}
    began = time.perf_counter()
    conn.sessions()
    out["ls_query_s"] = time.perf_counter() - began
    began = time.perf_counter()
    records = conn.records(conn.last_session())
    show_text(conn.session(conn.last_session()), records)
    out["show_query_s"] = time.perf_counter() - began
    conn.close()
    where = ["--db", str(db)]
    out["startup_s"] = command_seconds(["--version"], repeat)
    out["ls_s"] = command_seconds(["trace", "ls", *where], repeat)
    out["show_last_s"] = command_seconds(["trace", "show", "last", *where], repeat)
    out["show_largest_s"] = command_seconds(["trace", "show", str(largest), *where], repeat)
    return out


def hook_cost(tmp: Path, n: int) -> dict[str, float]:
    """Event-loop microseconds of Tracer.response per request, quiet (the live line's
    cost is mitmproxy's logging: the end-to-end arm "on live lines" shows it)."""
    from mitmproxy.test import taddons, tflow

    from modgate.addons.trace import Tracer
    from modgate.goproxy import parse_request

    def flow() -> Any:
        f = tflow.tflow(resp=True)
        f.metadata.update({"modgate.request": parse_request(f"{MODULE}/@v/v1.0.0.mod"),
                           "modgate.url": f"https://{HOST}/{MODULE}/@v/v1.0.0.mod",
                           "modgate.cache": "hit", "modgate.upstream": "https://mirror.example",
                           "modgate.hash": {"verdict": "verified", "source": "sumdb",
                                            "h1": "h1:x="}})  # fmt: skip
        return f

    async def measure() -> dict[str, float]:
        tracer = Tracer()
        with taddons.context(tracer) as tctx:
            cache = str(tmp / "hook" / "cache")
            tctx.options.add_option("modgate_cache_dir", str, cache, "")
            tctx.options.add_option("termlog_verbosity", str, "warn", "")  # no live line
            tctx.configure(tracer, modgate_cache_dir=cache)
            took = await respond(tracer, [flow() for _ in range(n)])
            tracer.done()
        return {"loop_us": took / n * 1e6}

    return asyncio.run(measure())


async def respond(tracer: Any, flows: list[Any]) -> float:
    began = time.perf_counter()
    for f in flows:
        tracer.response(f)
    return time.perf_counter() - began


# --- end to end ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mitmdump:
    def __init__(self, home: Path, upstream: str, **sets: str) -> None:
        self.home, self.port = home, free_port()
        home.mkdir(parents=True)
        rules = home / "rules.yaml"
        rules.write_text(f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
                         "checksum:\n  private: example.modgate.test\n")  # fmt: skip
        options = {"confdir": str(home / "confdir"), "connection_strategy": "lazy",
                   "modgate_rules": str(rules), "modgate_cache_dir": str(home / "cache"),
                   "termlog_verbosity": "warn", **sets}  # fmt: skip
        command = [str(Path(sys.executable).parent / "mitmdump"), "-q", "--listen-host",
                   "127.0.0.1", "--mode", f"reverse:http://goproxy.modgate.invalid@{self.port}",
                   "-s", str(REPO / "addons" / "modgate_addons.py")]  # fmt: skip
        for name, value in options.items():
            command += ["--set", f"{name}={value}"]
        self.log = (home / "out.log").open("wb")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((home / "out.log").read_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


def latencies(port: int, path: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        samples.append(time.perf_counter() - began)
        assert response.status == 200, response.status
    conn.close()
    return samples


def end_to_end(tmp: Path, rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    from world.modules import ModuleVersion, World
    from world.upstream import Upstream

    arms = {"off": {"modgate_trace": "false"}, "on": {},
            "on_live_lines": {"termlog_verbosity": "info"}}  # fmt: skip
    path = f"/{MODULE}/@v/v1.0.0.mod"
    samples: dict[str, list[float]] = {arm: [] for arm in arms}
    rps: dict[str, list[float]] = {arm: [] for arm in arms}
    load = loadgen_binary(tmp)
    (tmp / "paths").write_text(path + "\n")
    with Upstream(World([ModuleVersion(MODULE, "v1.0.0")])) as upstream:
        gates = {arm: Mitmdump(tmp / arm, upstream.url, **sets) for arm, sets in arms.items()}
        try:
            for gate in gates.values():
                latencies(gate.port, path, 50)  # fill the cache, warm up
            for _ in range(rounds):
                for arm, gate in gates.items():
                    samples[arm] += latencies(gate.port, path, per_round)
                    if load is not None:
                        rps[arm].append(throughput(load, gate.port, tmp / "paths"))
        finally:
            for gate in gates.values():
                gate.stop()
    out: dict[str, dict[str, float]] = {}
    for arm, values in samples.items():
        out[arm] = {"median_us": statistics.median(values) * 1e6,
                    "mean_us": statistics.fmean(values) * 1e6, "requests": len(values)}  # fmt: skip
        if rps[arm]:
            out[arm]["rps_8_conns"] = statistics.median(rps[arm])
    for arm in arms:
        if arm != "off":
            out[arm]["overhead_us"] = out[arm]["median_us"] - out["off"]["median_us"]
    return out


def loadgen_binary(tmp: Path) -> Path | None:
    """scripts/benchlib's Go load client (issue 6's benchmark), if it builds here."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from benchlib.procs import loadgen

        return loadgen(tmp)
    except Exception as e:  # the throughput figure is optional
        print(f"bench_trace: no load client ({e}); skipping requests/s", file=sys.stderr)
        return None


def throughput(binary: Path, port: int, paths: Path, seconds: float = 2.0) -> float:
    """Requests/s of 8 keep-alive connections at once: concurrent requests share commits."""
    done = subprocess.run(
        [str(binary), "-base", f"http://127.0.0.1:{port}", "-paths", str(paths), "-conns", "8",
         "-duration", f"{seconds}s"], capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    result = json.loads(done.stdout)
    assert not result.get("errors"), result
    return float(result["rps"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--per-session", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="10,000 records, fewer requests")
    args = parser.parse_args()
    n = 10_000 if args.quick else args.records
    rounds, per_round, repeat = (3, 200, 1) if args.quick else (6, 500, 3)
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmpdir:
        tmp = Path(tmpdir)
        db = tmp / "trace.db"
        print(f"bench_trace: writing {n:,} records ...", file=sys.stderr)
        store = fill(db, n, args.per_session)
        commit = commit_latency(tmp / "commit.db", 200 if args.quick else 1000)
        print("bench_trace: timing trace ls / show ...", file=sys.stderr)
        query = queries(db, repeat)
        print("bench_trace: hook cost ...", file=sys.stderr)
        hook = hook_cost(tmp, 500 if args.quick else 2000)
        print("bench_trace: end to end, trace off / on ...", file=sys.stderr)
        e2e = end_to_end(tmp, rounds, per_round)
    rows = [
        ("records written", f"{n:,} in {store['seconds']:.1f}s ({store['per_s']:,.0f}/s)"),
        ("writer time per record (batched)", f"{store['busy_us_per_record']:.0f} µs"),
        ("a lone record, submit to commit", f"median {commit['median_us']:.0f} µs, "
                                             f"p95 {commit['p95_us']:.0f} µs"),
        ("`modgate --version` (start-up only)", f"{query['startup_s']:.2f} s"),
        ("`modgate trace ls`", f"{query['ls_s']:.2f} s (query {query['ls_query_s'] * 1000:.0f} ms)"),  # noqa: E501
        ("`modgate trace show last`", f"{query['show_last_s']:.2f} s "
                                       f"(query + table {query['show_query_s'] * 1000:.0f} ms)"),
        (f"`modgate trace show {query['largest_session']:.0f}` (largest)",
         f"{query['show_largest_s']:.2f} s"),
        ("response hook, event-loop time", f"{hook['loop_us']:.0f} µs per request"),
    ]  # fmt: skip
    for arm, values in e2e.items():
        extra = f", +{values['overhead_us']:.0f} µs" if "overhead_us" in values else ""
        median = f"median {values['median_us']:.0f} µs{extra}"
        if "rps_8_conns" in values:
            ratio = values["rps_8_conns"] / e2e["off"]["rps_8_conns"]
            median += f"; 8 connections {values['rps_8_conns']:.0f} req/s ({ratio:.0%})"
        rows.append((f"cached .mod, trace {arm.replace('_', ' ')}", median))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    slowest = max(query["ls_s"], query["show_last_s"], query["show_largest_s"])
    own = slowest - query["startup_s"]  # what the trace adds to modgate's CLI start-up
    verdict = {"under_1s_whole_command": slowest < 1.0, "under_1s_beyond_startup": own < 1.0}
    print(
        f"trace ls/show at {n:,} records: slowest {slowest:.2f} s, {own * 1000:+.0f} ms beyond "
        f"the start-up of any modgate command; under 1 s: whole command "
        f"{'yes' if slowest < 1.0 else 'no'}, beyond start-up {'yes' if own < 1.0 else 'NO'}"
    )
    print(json.dumps({"records": n, "store": store, "commit": commit, "queries": query,
                      "hook": hook, "end_to_end": e2e, **verdict}))  # fmt: skip
    print(f"reproduce: scripts/bench_trace {shlex.join(sys.argv[1:])}".rstrip())
    return 0 if own < 1.0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
