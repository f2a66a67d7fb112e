"""Benchmark several replicas on one cache (issue 17): 3 replicas against 1, and the
object store's own throughput.

    1 replica    one `modgate run`, its local cache only (no bucket, no Redis)
    3 replicas   three `modgate run`, each with its local cache, sharing one SeaweedFS
                 bucket and one Redis (the real servers of tests/world/servers.py)
    cold         CLIENTS go commands at once (`go mod tidy`, fresh module caches) spread
                 over the replicas, every cache and the bucket empty: wall time, and
                 the largest number of upstream fetches of any one path
    warm         the same again with new module caches
    from bucket  a new replica, empty local cache, upstream stopped: one client, all
                 from the bucket
    s3           S3Tier put and get of a SIZE_MB file (multipart, streamed): MB/s and
                 the peak RSS of this process

It prints a table and one JSON line. Run `scripts/bench_replicas` (`--quick` for a
smaller run); numbers from a shared 2-core machine are rough.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]

from modgate.config import S3Settings  # noqa: E402
from modgate.objectstore import Credentials, S3Tier  # noqa: E402
from modgate.store import Entry, sha256_file  # noqa: E402
from world.gate import Gate  # noqa: E402
from world.gocmd import go_env, run_go  # noqa: E402
from world.modules import MainModule, graph, write_main_module  # noqa: E402
from world.servers import ACCESS_KEY, SECRET_KEY, RedisServer, S3Server  # noqa: E402
from world.upstream import Upstream  # noqa: E402

HOST = "proxy.modgate.test"
PRIVATE = "example.modgate.test"


def rules(upstream: str, s3: S3Server | None, redis: RedisServer | None) -> str:
    text = (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
        f"checksum:\n  private: {PRIVATE}\n"
    )
    if s3 is not None and redis is not None:
        text += (
            f"store:\n  s3:\n    endpoint: {s3.endpoint}\n    bucket: {s3.bucket}\n"
            f"coordination:\n  redis:\n    url: {redis.url}\n"
        )
    return text


def say(text: str) -> None:
    print(f"bench_replicas: {text}", file=sys.stderr, flush=True)


def clients(gates: list[Gate], app: MainModule, here: Path, name: str, n: int) -> float:
    """Seconds for n `go mod tidy` at once, client i on gate i % len(gates)."""
    dirs = []
    for i in range(n):
        d = here / f"{name}{i}"
        shutil.copytree(app.dir, d)
        dirs.append(d)
    envs = [
        gates[i % len(gates)].client_env(go_env(here / f"{name}-home{i}", f"https://{HOST}"))
        for i in range(n)
    ]
    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        done = list(pool.map(
            lambda i: run_go(["mod", "tidy"], envs[i], dirs[i], check=False, timeout=600),
            range(n),
        ))  # fmt: skip
    took = time.perf_counter() - started
    failed = [d.stderr for d in done if d.returncode != 0]
    if failed:
        raise SystemExit(f"bench_replicas: {len(failed)} go commands failed:\n{failed[0]}")
    return took


def cluster_run(
    n: int, world: Any, app: MainModule, here: Path, n_clients: int, latency: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        shared = n > 1
        s3 = stack.enter_context(S3Server(here / "s3")) if shared else None
        redis = stack.enter_context(RedisServer(here / "redis")) if shared else None
        upstream = stack.enter_context(Upstream(world, delay=latency))
        gates = []
        for i in range(n):
            gate = Gate(here / f"replica{i}", rules(upstream.url, s3, redis))  # type: ignore[arg-type]
            gate.env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
            gates.append(stack.enter_context(gate))
        out["cold_s"] = clients(gates, app, here, "cold", n_clients)
        counts = {p: c for p, c in upstream.counts().items() if not p.endswith("/supported")}
        out["max_fetches_per_path"] = max(counts.values())
        out["upstream_requests"] = sum(counts.values())
        out["warm_s"] = clients(gates, app, here, "warm", n_clients)
        if shared:
            upstream.stop()
            fresh = Gate(here / "fresh", rules(upstream.url, s3, redis))
            fresh.env = gates[0].env
            stack.enter_context(fresh)
            out["from_bucket_s"] = clients([fresh], app, here, "bucket", 1)
            out["objects"] = len(s3.objects()) if s3 else 0
    return out


def s3_throughput(here: Path, size_mb: int) -> dict[str, Any]:
    with S3Server(here / "s3t") as s3:
        body = here / "body.bin"
        with body.open("wb") as f:
            for _ in range(size_mb):
                f.write(os.urandom(1 << 20))
        digest = sha256_file(body)
        entry = Entry(
            key="v2 bench/@v/v1.0.0.zip", status=200, content_type="application/zip",
            size=body.stat().st_size, sha256=digest, stored_at=time.time(), expires_at=None,
            upstream="bench",
        )  # fmt: skip
        spool = here / "spool"
        spool.mkdir()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        async def go() -> tuple[float, float]:
            tier = S3Tier(
                S3Settings(endpoint=s3.endpoint, bucket=s3.bucket),
                Credentials(ACCESS_KEY, SECRET_KEY, "bench"),
            )
            try:
                t = time.perf_counter()
                await tier.put(entry, body)
                up = time.perf_counter() - t
                t = time.perf_counter()
                got = await tier.get(entry.key, spool)
                down = time.perf_counter() - t
                assert got is not None
                got[1].unlink()
                return up, down
            finally:
                await tier.close()

        up, down = asyncio.run(go())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "size_mb": size_mb,
        "put_mb_s": size_mb * 1.048576 / up,
        "get_mb_s": size_mb * 1.048576 / down,
        "peak_rss_mib": peak // 1024,
        "rss_before_mib": before // 1024,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="24 modules, 6 clients, 64 MB")
    p.add_argument("--modules", type=int, default=28, help="6 to 28")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--size-mb", type=int, default=200)
    p.add_argument("--s3-only", nargs=2, metavar=("SIZE_MB", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.s3_only:
        print(json.dumps(s3_throughput(Path(args.s3_only[1]), int(args.s3_only[0]))))
        return 0
    if args.quick:
        args.modules, args.clients, args.size_mb = 24, 6, 64
    result: dict[str, Any] = {"modules": args.modules, "clients": args.clients}
    with tempfile.TemporaryDirectory(prefix="modgate-bench-replicas-") as tmp:
        here = Path(tmp)
        with graph(args.modules, workdir=here / "world") as world:
            app = write_main_module(world, here / "app")
            for n in (1, 3):
                say(f"{n} replica(s), {args.clients} clients, {args.modules} modules")
                run_dir = here / f"n{n}"
                run_dir.mkdir()
                result[f"replicas_{n}"] = cluster_run(
                    n, world, app, run_dir, args.clients, args.latency_ms / 1000
                )
        say(f"object store throughput, {args.size_mb} MB (in a process of its own, for its RSS)")
        measured = subprocess.run(
            [sys.executable, __file__, "--s3-only", str(args.size_mb), str(here)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result["s3"] = json.loads(measured.stdout)
    one, three, s3 = result["replicas_1"], result["replicas_3"], result["s3"]
    print(f"{'':22}{'1 replica':>12}{'3 replicas':>12}")
    print(f"{'cold (s)':22}{one['cold_s']:12.2f}{three['cold_s']:12.2f}")
    print(f"{'warm (s)':22}{one['warm_s']:12.2f}{three['warm_s']:12.2f}")
    print(f"{'max fetches of a path':22}{one['max_fetches_per_path']:12}"
          f"{three['max_fetches_per_path']:12}")  # fmt: skip
    print(f"{'from bucket, 1 client (s)':22}{'':>12}{three['from_bucket_s']:>12.2f}")
    print(
        f"s3 ({s3['size_mb']} MB): put {s3['put_mb_s']:.0f} MB/s, get {s3['get_mb_s']:.0f} MB/s, "
        f"peak RSS {s3['peak_rss_mib']} MiB"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
