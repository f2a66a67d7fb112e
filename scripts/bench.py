"""Benchmark modgate against the limits it should come close to and its peers (issues 6, 13).

Each variant is a whole `go mod download` of a generated module graph with a fresh
GOMODCACHE, repeated, interleaved within one run (the machine is shared and noisy):

    direct      go straight from the upstream (simulated latency and bandwidth cap)
    cold        through modgate with an empty cache (HTTPS proxy and GOPROXY endpoint)
    warm        through modgate with a full cache and the upstream stopped
    file        GOPROXY=file:// of the same files: the physical limit of a warm cache
    gohttp      the same files from Go's own net/http file server: the limit of any HTTP
                server (plain HTTP, keep-alive, no proxy)
    bare        a trivial addon answering from memory, on the mitmproxy modgate runs
                (the same addons): the floor of the stack
    peer-*      the peers, with --goproxy and --athens (binaries built by
                scripts/build-peers): each a GOPROXY server over the same upstream,
                verifying against the same checksum database; cold (empty storage)
                and warm (full storage, upstream stopped)

With several --latency-ms values (e.g. 20,2) the variants that reach the upstream
(direct, cold) run at each, in the same repetitions; the first is the run's own.

plus 32 go clients at once on a cold cache, modgate's peak RSS while it moves a module
of over 200 MiB, and requests/s for small cached hits against bare mitmproxy (and, for
the record, against the same addon in mitmdump, with all of mitmproxy's addons). It prints
a table, one JSON line, and the command that reproduces the run. Run `scripts/bench`.

Everything listens on 127.0.0.1. The upstream is the test world's (tests/world), reached
by HTTPS-proxy clients under a made-up host that modgate maps. modgate verifies what it
fetches against a local checksum database with the upstream's latency (its cost counts);
the go clients run with GOSUMDB=off in every variant, so they do the same work in each.

The live part (`--only live`, in the default run, skipped when the registry does not
answer) downloads real projects from the registry `go env GOPROXY` names: direct,
through modgate with no rules file (its defaults) and through the peers; see
benchlib/live.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "scripts")]

from benchlib import live, workload  # noqa: E402
from benchlib.procs import (  # noqa: E402
    HOST,
    PEERS,
    Bare,
    FileServer,
    Modgate,
    PeakRss,
    Peer,
    Server,
    SlowSumdb,
    loadgen,
    peer_works,
    remove,
    run_loadgen,
    timed_go,
)

from world import Upstream, go_env, proxy_path  # noqa: E402

MODES = ("proxy", "goproxy")
MODE_NAMES = {"proxy": "HTTPS proxy", "goproxy": "GOPROXY endpoint"}
PEER_NAMES = {"goproxy": "goproxy", "athens": "Athens"}
PARTS = "downloads,concurrent,memory,hits"
# Issue 13's targets (the earlier ones of issue 6 were file://- and bare-relative).
TARGETS = {
    "cold_le_0.9x_direct": "cold <= 0.9x direct, every latency, both modes",
    "warm_endpoint_le_goproxy": "warm endpoint <= goproxy's time",
    "warm_remote_le_1.3x_goproxy": "warm proxy, no loopback redirect <= 1.3x goproxy",
    "hits_endpoint_ge_goproxy": "small hits, endpoint >= goproxy's requests/s",
    "hits_proxy_ge_90pct_bare": "small hits, proxy >= 90% of bare mitmproxy",
    "concurrent_clean": "32 clients: 0 errors, 1 fetch per artifact",
    "rss_le_100mib": "peak RSS <= 100 MiB per worker",
}


@dataclass
class Run:
    """Everything measured in one benchmark run."""

    times: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)  # variant: peak MiB of its server
    skipped: dict[str, str] = field(default_factory=dict)  # part or peer: why

    def record(self, variant: str, seconds: float, error: str) -> None:
        if error:
            self.errors.append(f"{variant}: {error}")
            print(f"  {variant}: FAILED after {seconds:.1f}s: {error}", file=sys.stderr)
            return
        self.times.setdefault(variant, []).append(seconds)
        print(f"  {variant}: {seconds:.2f}s", file=sys.stderr, flush=True)

    def peak(self, variant: str, rss_bytes: int) -> None:
        self.rss[variant] = max(self.rss.get(variant, 0.0), rss_bytes / (1 << 20))

    def skip(self, what: str, why: str) -> None:
        self.skipped[what] = why
        say(f"{what}: skipped: {why}")

    def median(self, variant: str) -> float | None:
        values = self.times.get(variant)
        return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.only and (unknown := set(args.only.split(",")) - {*PARTS.split(","), "live"}):
        parser.error(f"--only: no part named {', '.join(sorted(unknown))}")
    spec = workload.QUICK if args.quick else workload.Spec()
    if args.modules:
        spec = replace(spec, modules=args.modules)
    workdir = args.workdir.expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"generating the workload in {workdir} (reused by later runs)")
    wl = workload.build(spec, workdir)
    say("building the load client")
    binary = loadgen(workdir)
    here = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    run = Run()
    failed = False
    try:
        bench(args, wl, binary, here, run)
    except Exception:  # report what was measured before it, and the failure
        failed = True
        run.errors.append("bench stopped: " + traceback.format_exc(limit=-3)[-600:])
        print(traceback.format_exc(), file=sys.stderr)
    finally:
        remove(here)
    report(args, spec, wl, run)
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a small run for the test suite")
    p.add_argument("--reps", type=int, help="repetitions of each variant (default 3, quick 1)")
    p.add_argument("--modules", type=int, help="modules in the graph (default 150, quick 16)")
    p.add_argument("--latency-ms", type=_latencies,
                   help="upstream delay per request, or a comma-separated list of them, "
                        "the first the run's own (default 20, quick 5)")  # fmt: skip
    p.add_argument("--throttle-mib", type=float,
                   help="upstream MiB/s per connection, 0: no cap (default 50)")  # fmt: skip
    p.add_argument("--clients", type=int, help="concurrent go clients (default 32, quick 4)")
    p.add_argument("--rps-seconds", type=float, help="length of one requests/s sample (default 3)")
    p.add_argument("--workers", type=int, default=1,
                   help="modgate's --workers (default 1: one process, as before; peak RSS "
                        "sums the processes)")  # fmt: skip
    p.add_argument("--http2", action=argparse.BooleanOptionalAction, default=None,
                   help="pass --http2/--no-http2 to modgate (and the same to bare mitmproxy "
                        "and the load client); default: modgate's own default")  # fmt: skip
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / f"modgate-bench-{os.getuid()}",
                   help="where the workload is generated and kept (%(default)s)")  # fmt: skip
    p.add_argument("--source", type=Path,
                   help="run modgate from this copy of addons/, to compare versions")  # fmt: skip
    p.add_argument("--goproxy", type=Path, metavar="PATH",
                   help="goproxy's binary (./cmd/goproxy; scripts/build-peers)")  # fmt: skip
    p.add_argument("--athens", type=Path, metavar="PATH",
                   help="Athens' binary (./cmd/proxy; scripts/build-peers)")  # fmt: skip
    p.add_argument(
        "--only",
        help=f"comma-separated parts to run, of {PARTS},live (default: all; quick: {PARTS})",
    )
    p.add_argument("--live-projects", type=int,
                   help=f"how many of the real projects to download (default all "
                        f"{len(live.PROJECTS)})")  # fmt: skip
    return p


def _latencies(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: not a list of milliseconds") from e
    if not values or any(v < 0 for v in values) or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct milliseconds >= 0")
    return values


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved settings of this run (defaults depend on --quick)."""
    q = args.quick
    latencies = args.latency_ms or [5.0 if q else 20.0]
    return {
        "quick": bool(q),
        "reps": args.reps or (1 if q else 3),
        "latency_ms": latencies[0],
        "latencies_ms": latencies,
        "parts": args.only or (PARTS if q else f"{PARTS},live"),
        "throttle_mib": args.throttle_mib if args.throttle_mib is not None else 50.0,
        "clients": args.clients or (4 if q else 32),
        "rps_seconds": args.rps_seconds or (0.5 if q else 3.0),
        "workers": args.workers,
    }


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def bench(
    args: argparse.Namespace, wl: workload.Workload, binary: Path, here: Path, run: Run
) -> None:
    cfg = settings(args)
    parts = set(cfg["parts"].split(","))
    margs = () if args.http2 is None else ("--http2" if args.http2 else "--no-http2",)
    margs += ("--workers", str(args.workers))
    run.extra["workers"] = args.workers
    http2 = args.http2 if args.http2 is not None else _modgate_default_http2()
    run.extra["http2"] = http2
    peers = usable_peers(args, run)
    if parts & {"downloads", "hits", "memory", "concurrent"}:
        upstream = Upstream(wl.tree, delay=cfg["latency_ms"] / 1000)
        sumdb = SlowSumdb(cfg["latency_ms"] / 1000)
        for module, version, zip_h1, mod_h1 in wl.sums:
            sumdb.add(module, version, zip_h1, mod_h1)
        w = Synthetic(cfg, args, wl, binary, upstream, sumdb, peers, margs, http2, here, run)
        synthetic(w, parts)
    if "live" in parts:
        data, errors, why = live.bench(cfg, args, peers, margs, here, say)
        run.errors += errors
        if why:
            run.skip("live", why)
        else:
            run.extra["live"] = data


@dataclass
class Synthetic:
    """The generated workload's world for one run: its upstream and checksum database,
    and what starts modgate and the peers over them."""

    cfg: dict[str, Any]
    args: argparse.Namespace
    wl: workload.Workload
    binary: Path  # the load client
    upstream: Upstream
    sumdb: SlowSumdb
    peers: dict[str, Path]
    margs: tuple[str, ...]
    http2: bool
    here: Path
    run: Run

    def gate(self, name: str) -> Modgate:
        return Modgate(self.here / name, self.upstream.url, self.sumdb.gosumdb, self.margs,
                       self.args.source).start()  # fmt: skip

    def peer(self, kind: str, name: str) -> Peer:
        return PEERS[kind](self.peers[kind], self.here / name, self.upstream.url,
                           self.sumdb.gosumdb).start()  # fmt: skip


def synthetic(w: Synthetic, parts: set[str]) -> None:
    """The parts on the generated workload."""
    with w.upstream, w.sumdb:
        w.run.extra["upstream_raw_mb_s"] = upstream_speed(w.upstream, w.wl, w.binary, w.here)
        if w.cfg["throttle_mib"]:
            w.upstream.fault("*", throttle=int(w.cfg["throttle_mib"] * (1 << 20)))
        if parts & {"downloads", "hits"}:
            against_warm(w, parts)
        if "memory" in parts:
            memory(w.wl, w.gate, w.here, w.run)
        if "concurrent" in parts:
            concurrent(w.cfg, w.wl, w.upstream, w.gate, w.here, w.run)


def against_warm(w: Synthetic, parts: set[str]) -> None:
    """The parts that need a warm modgate (and warm peers), bare mitmproxy and Go's
    file server: downloads and hits."""
    wl, here, run = w.wl, w.here, w.run
    with w.gate("warm") as warm, contextlib.ExitStack() as stack:
        say("priming the warm cache")
        run.record("prime", *download(warm, "proxy", wl, here / "prime"))
        warm_peers: dict[str, Peer] = {}
        for kind in w.peers:
            if peer := start_peer(w.peer, kind, f"warm-{kind}", run):
                stack.enter_context(peer)
                run.record(f"prime-{kind}", *download(peer, "goproxy", wl, here / "prime"))
                warm_peers[kind] = peer
        bare = stack.enter_context(Bare(here / "bare", wl.tree, warm, w.http2).start())
        files = stack.enter_context(
            FileServer(here / "fileserver", wl.tree, w.args.workdir.expanduser()).start()
        )
        run.record("prime-bare", *download(bare, "proxy", wl, here / "prime"))
        if "downloads" in parts:
            # The HTTPS proxy as a client on another machine gets it: every body through the
            # proxy, none redirected to the loopback file server. A second modgate on the
            # warm cache (several may share one).
            remote = Modgate(
                here / "warm-remote",
                w.upstream.url,
                w.sumdb.gosumdb,
                (*w.margs, "--set", "modgate_redirect_local=false"),
                w.args.source,
            )
            remote.cache_dir = warm.cache_dir
            stack.enter_context(remote.start())
            servers: dict[str, Server] = {
                "warm": warm,
                "bare": bare,
                "gohttp": files,
                "remote": remote,
            }
            servers.update({f"peer-{k}": p for k, p in warm_peers.items()})
            downloads(w, servers)
        if "hits" in parts:
            w.upstream.stop()
            with Bare(here / "mitmdump", wl.tree, warm, w.http2, mitmdump=True).start() as md:
                download(md, "proxy", wl, here / "prime")  # reads the files once
                targets: list[tuple[str, Server, tuple[str, ...]]] = [
                    ("modgate", warm, MODES), ("bare", bare, MODES), ("mitmdump", md, MODES),
                    ("gohttp", files, ("goproxy",)),
                ]  # fmt: skip
                targets += [(f"peer-{k}", p, ("goproxy",)) for k, p in warm_peers.items()]
                hits(w.cfg, wl, targets, w.binary, w.http2, here, run)
                scaling(w, warm)
            w.upstream.start()


SCALE_WORKERS = 2
SCALE_CONNS = 16  # SO_REUSEPORT spreads connections, not requests: give it several


def scaling(w: Synthetic, warm: Modgate) -> None:
    """Small cached hits with one worker and with SCALE_WORKERS, in both modes, taking
    turns in one run (16 keep-alive connections), and the server's CPU per request: N
    workers serve N times one's rate where N cores are free for them, and the CPU per
    request says how much of a core one request costs, whoever shares the machine."""
    cfg, here, run = w.cfg, w.here, w.run
    margs = w.margs[: w.margs.index("--workers")]  # bench() adds "--workers N" last
    gates = {1: warm if w.args.workers == 1 else None, SCALE_WORKERS: None}
    paths = here / "small.txt"
    samples: dict[str, list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        for n in gates:
            if gates[n] is None:
                gate = Modgate(here / f"scale-{n}", w.upstream.url, w.sumdb.gosumdb,
                               (*margs, "--workers", str(n)), w.args.source)  # fmt: skip
                gate.cache_dir = warm.cache_dir
                gates[n] = stack.enter_context(gate.start())
        for rep in range(-1, cfg["reps"]):  # -1: a warm-up round, not kept
            for n, gate in _rotate_list(list(gates.items()), rep):
                assert gate is not None
                for mode in MODES:
                    seconds = cfg["rps_seconds"] if rep >= 0 else 0.3
                    common = [
                        "-paths",
                        str(paths),
                        "-conns",
                        str(SCALE_CONNS),
                        "-duration",
                        f"{seconds}s",
                        *(["-h2"] if w.http2 else []),
                    ]
                    if mode == "proxy":
                        target = ["-base", f"https://{HOST}", "-proxy", gate.proxy_url,
                                  "-ca", str(gate.bundle)]  # fmt: skip
                    else:
                        target = ["-base", gate.goproxy_url]
                    before = _cpu_seconds(gate.pid)
                    result = run_loadgen(w.binary, *target, *common)
                    cpu = _cpu_seconds(gate.pid) - before
                    if result.get("errors"):
                        run.errors.append(f"scaling {n} {mode}: {result.get('first_error')}")
                    if rep >= 0 and result["requests"]:
                        ms = 1000 * cpu / result["requests"]
                        samples.setdefault(f"{mode}-{n}", []).append((float(result["rps"]), ms))
                        say(f"scaling {mode}, {n} worker(s): {result['rps']:.0f} requests/s, "
                            f"{ms:.2f} ms of server CPU each")  # fmt: skip
    run.extra["scaling"] = samples


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its children (the workers) so far."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def usable_peers(args: argparse.Namespace, run: Run) -> dict[str, Path]:
    """The peers given that run here, by kind; a line on stderr for each that is not."""
    found = {}
    for kind in PEERS:
        binary: Path | None = getattr(args, kind)
        why = peer_works(kind, binary)
        if why:
            run.skip(f"peer {kind}", why)
        else:
            assert binary is not None
            found[kind] = binary.expanduser().resolve()
    return found


def start_peer(new_peer: Callable[[str, str], Peer], kind: str, name: str, run: Run) -> Peer | None:
    try:
        return new_peer(kind, name)
    except RuntimeError as e:
        run.errors.append(f"{kind} did not start: {str(e)[:300]}")
        say(f"{kind} did not start: {e}")
        return None


def latency_suffix(cfg: dict[str, Any], latency: float) -> str:
    """The suffix of variant names at `latency`: "" for the run's own, "@2ms" for 2 ms."""
    return "" if latency == cfg["latency_ms"] else f"@{latency:g}ms"


def _modgate_default_http2() -> bool:
    from modgate.cli import _parser

    args = _parser().parse_args(["run"])
    return bool(args.http2)


def download(
    server: Server | None, mode: str, wl: workload.Workload, home: Path,
    modules: tuple[tuple[str, str], ...] | None = None, goproxy: str = "",
) -> tuple[float, str]:  # fmt: skip
    """One whole `go mod download` of the graph with a fresh module cache; (seconds, error)."""
    remove(home)
    app = wl.app(home / "app", modules)
    env = go_env(home, goproxy) if server is None else server.client_env(home, mode)
    try:
        return timed_go(["mod", "download"], env, app, timeout=900)
    finally:
        remove(home)


def downloads(w: Synthetic, servers: dict[str, Server]) -> None:
    """The variants, interleaved: per repetition, the ones that need the upstream (at
    each latency), then (upstream stopped) the ones that must not, each list rotated by
    one per rep. `servers`: the warm modgate, bare mitmproxy, the Go file server and
    the warm peers, by variant."""
    cfg, wl, upstream, here, run = w.cfg, w.wl, w.upstream, w.here, w.run
    with_upstream = ["direct", *(f"cold-{m}" for m in MODES)]
    with_upstream += [f"cold-peer-{k}" for k in w.peers]
    without = ["file", "gohttp", *(f"warm-{m}" for m in MODES), *(f"bare-{m}" for m in MODES)]
    without += ["warm-remote"] if "remote" in servers else []
    without += [f"warm-{name}" for name in servers if name.startswith("peer-")]
    duplicates = 0
    for rep in range(cfg["reps"]):
        say(f"downloads, repetition {rep + 1} of {cfg['reps']}")
        for latency in cfg["latencies_ms"]:
            upstream.delay = w.sumdb.delay = latency / 1000
            suffix = latency_suffix(cfg, latency)
            for variant in _rotate(with_upstream, rep):
                name = variant + suffix
                if variant == "direct":
                    run.record(name, *download(None, "", wl, here / "go", goproxy=upstream.url))
                    continue
                upstream.reset_counts()
                cold_download(w, variant, name)
                if not variant.startswith("cold-peer-"):
                    duplicates += sum(n - 1 for n in upstream.counts().values())
        upstream.delay = w.sumdb.delay = cfg["latency_ms"] / 1000
        upstream.stop()
        for variant in _rotate(without, rep):
            kind, _, mode = variant.partition("-")
            if kind == "file":
                seconds_error = download(None, "", wl, here / "go", goproxy=f"file://{wl.tree}")
            elif mode.startswith("peer-"):
                seconds_error = download(servers[mode], "goproxy", wl, here / "go")
            elif mode == "remote":
                seconds_error = download(servers["remote"], "proxy", wl, here / "go")
            else:
                seconds_error = download(servers[kind], mode or "goproxy", wl, here / "go")
            run.record(variant, *seconds_error)
        upstream.start()
    run.extra["cold_duplicate_fetches"] = duplicates


def cold_download(w: Synthetic, variant: str, name: str) -> None:
    """One cold variant: a server with empty storage, its peak RSS (go children
    included) sampled while the client downloads the graph through it, and the
    requests it sent the checksum database."""
    server: Server
    if variant.startswith("cold-peer-"):
        started = start_peer(w.peer, variant.removeprefix("cold-peer-"), "cold", w.run)
        if started is None:
            return
        server, mode = started, "goproxy"
    else:
        server, mode = w.gate("cold"), variant.removeprefix("cold-")
    before = w.sumdb.counts.total()
    with server, PeakRss(server.pid, interval=0.05) as peak:
        w.run.record(name, *download(server, mode, w.wl, w.here / "go"))
    w.run.peak(name, peak.peak)
    asked = w.run.extra.setdefault("cold_sumdb_requests", {})
    asked[name] = max(asked.get(name, 0), w.sumdb.counts.total() - before)
    remove(w.here / "cold")


def _rotate(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


def upstream_speed(upstream: Upstream, wl: workload.Workload, binary: Path, here: Path) -> float:
    """MB/s the test upstream serves the largest zip at, unthrottled and without delay:
    whether it can saturate its own bandwidth cap."""
    zips = [(wl.tree / proxy_path(m, v, ".zip")) for m, v in wl.modules]
    largest = max(zips, key=lambda p: p.stat().st_size)
    paths = here / "largest.txt"
    paths.write_text("/" + str(largest.relative_to(wl.tree)) + "\n")
    delay, upstream.delay = upstream.delay, 0.0
    try:
        result = run_loadgen(binary, "-base", upstream.url, "-paths", str(paths), "-conns", "1",
                             "-max", "4", "-duration", "20s")  # fmt: skip
    finally:
        upstream.delay = delay
    return round(float(result.get("mb_per_s", 0.0)), 1)


def hits(
    cfg: dict[str, Any], wl: workload.Workload, servers: list[tuple[str, Server, tuple[str, ...]]],
    binary: Path, http2: bool, here: Path, run: Run,
) -> None:  # fmt: skip
    """Requests/s of small cached answers (.info, .mod) over 4 keep-alive connections,
    modgate, bare mitmproxy, mitmdump, Go's file server and the peers taking turns, each
    in the client modes it has."""
    paths = here / "small.txt"
    paths.write_text("".join(f"/{proxy_path(m, v, ext)}\n" for m, v in wl.modules
                             for ext in (".info", ".mod")))  # fmt: skip
    samples: dict[str, list[float]] = {}
    for rep in range(-1, cfg["reps"]):  # -1: a warm-up round, not kept
        for name, server, modes in _rotate_list(servers, rep):
            for mode in modes:
                duration = f"{cfg['rps_seconds'] if rep >= 0 else 0.3}s"
                common = ["-paths", str(paths), "-conns", "4", "-duration", duration]
                if http2:
                    common.append("-h2")
                if mode == "proxy":
                    target = ["-base", f"https://{HOST}", "-proxy", server.proxy_url,
                              "-ca", str(server.bundle)]  # fmt: skip
                else:
                    target = ["-base", server.goproxy_url]
                result = run_loadgen(binary, *target, *common)
                if result.get("errors"):
                    run.errors.append(f"hits {name} {mode}: {result.get('first_error')}")
                if rep >= 0:
                    samples.setdefault(f"{name}-{mode}", []).append(float(result["rps"]))
                    say(f"hits {name} {mode}: {result['rps']:.0f} requests/s")
    run.extra["hits_rps"] = samples


def _rotate_list(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


def memory(wl: workload.Workload, new_gate: Callable[[str], Modgate], here: Path, run: Run) -> None:
    """Peak RSS of modgate (children included) while one huge module goes through it,
    cold (fetched, stored, served) and then warm (served from the cache)."""
    module, version = wl.huge
    huge = wl.tree / proxy_path(module, version, ".zip")
    run.extra["huge_mib"] = round(huge.stat().st_size / (1 << 20), 1)
    rss: dict[str, float] = {}
    seconds: dict[str, float] = {}
    with new_gate("memory") as gate:
        rss["idle"] = PeakRss(gate.pid).sample() / (1 << 20)
        for case, mode in (("cold", "proxy"), ("warm-proxy", "proxy"), ("warm-goproxy", "goproxy")):
            home = here / f"mem-{case}"
            remove(home)
            home.mkdir(parents=True)
            say(f"memory: {module}@{version} {case}")
            with PeakRss(gate.pid) as peak:
                elapsed, error = timed_go(
                    ["mod", "download", f"{module}@{version}"], gate.client_env(home, mode), home,
                    timeout=900,
                )  # fmt: skip
            remove(home)
            if error:
                run.errors.append(f"memory {case}: {error}")
            rss[case] = peak.peak / (1 << 20)
            seconds[case] = elapsed
    remove(here / "memory")
    run.extra["rss_mib"] = {k: round(v, 1) for k, v in rss.items()}
    run.extra["huge_seconds"] = {k: round(v, 2) for k, v in seconds.items()}


def concurrent(
    cfg: dict[str, Any], wl: workload.Workload, upstream: Upstream,
    new_gate: Callable[[str], Modgate], here: Path, run: Run,
) -> None:  # fmt: skip
    """N go clients at once on a cold cache, half as HTTPS-proxy clients and half at the
    GOPROXY endpoint, each downloading the graph's small modules and its two smallest
    over 2 MB (32 copies of every large zip would measure the disk, not modgate); every
    artifact must be fetched from the upstream exactly once."""
    clients = cfg["clients"]
    sizes = {mv: (wl.tree / proxy_path(*mv, ".zip")).stat().st_size for mv in wl.modules}
    ranked = sorted(wl.modules, key=lambda mv: sizes[mv])
    small = [mv for mv in ranked if sizes[mv] < 2_000_000]
    modules = tuple(small + ranked[len(small) : len(small) + 2])
    upstream.reset_counts()
    say(f"{clients} clients at once, {len(modules)} modules each")
    with new_gate("conc") as gate:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = list(pool.map(
                lambda i: download(gate, MODES[i % 2], wl, here / f"c{i}", modules),
                range(clients),
            ))  # fmt: skip
        elapsed = time.perf_counter() - start
    remove(here / "conc")
    errors = [e for _, e in done if e]
    run.errors += [f"concurrent: {e}" for e in errors]
    counts = upstream.counts()
    run.extra["concurrent"] = {
        "clients": clients,
        "modules": len(modules),
        "errors": len(errors),
        "seconds": round(elapsed, 2),
        "artifacts_fetched": len(counts),
        "max_fetches_per_artifact": max(counts.values(), default=0),
        "duplicate_fetches": sum(n - 1 for n in counts.values()),
    }


# --- the report ----------------------------------------------------------------------


def report(args: argparse.Namespace, spec: workload.Spec, wl: workload.Workload, run: Run) -> None:
    cfg = settings(args)
    result = summary(cfg, spec, wl, run)
    print(table(cfg, wl, run, result))
    print(json.dumps(result, separators=(",", ":")))
    print(f"reproduce: {reproduce(args, cfg)}")


def summary(
    cfg: dict[str, Any], spec: workload.Spec, wl: workload.Workload, run: Run
) -> dict[str, Any]:
    from modgate import __version__

    def ratio(a: str, b: str) -> float | None:
        x, y = run.median(a), run.median(b)
        return round(x / y, 3) if x is not None and y else None

    result: dict[str, Any] = {
        "bench": "modgate", "modgate": __version__, **cfg, "http2": run.extra.get("http2"),
        "modules": len(wl.modules), "artifacts": wl.artifacts,
        "zip_mb": round(wl.zip_bytes / 1e6, 1),
        "upstream_raw_mb_s": run.extra.get("upstream_raw_mb_s"),
    }  # fmt: skip
    for variant, values in sorted(run.times.items()):
        if variant.startswith("prime"):
            continue
        result[f"{variant}_s"] = {
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
            "n": len(values),
        }
    ratios = {"gohttp_over_file": ratio("gohttp", "file")}
    peers = [f"peer-{k}" for k in PEERS if f"peer {k}" not in run.skipped]
    for mode in [*MODES, *peers]:
        ratios[f"warm_over_file_{mode}"] = ratio(f"warm-{mode}", "file")
        for latency in cfg["latencies_ms"]:
            sfx = latency_suffix(cfg, latency)
            ratios[f"cold_over_direct_{mode}{sfx}"] = ratio(f"cold-{mode}{sfx}", f"direct{sfx}")
    ratios["warm_over_file_remote"] = ratio("warm-remote", "file")
    # The warm targets: the endpoint <= goproxy's time, the HTTPS proxy with the
    # loopback redirect off (clients on other machines) <= 1.3x goproxy's.
    for mode in [*MODES, "remote"]:
        ratios[f"warm_over_goproxy_{mode}"] = ratio(f"warm-{mode}", "warm-peer-goproxy")
    for mode in MODES:
        ratios[f"warm_over_bare_{mode}"] = ratio(f"warm-{mode}", f"bare-{mode}")
        ratios[f"bare_over_file_{mode}"] = ratio(f"bare-{mode}", "file")
        ratios[f"warm_over_gohttp_{mode}"] = ratio(f"warm-{mode}", "gohttp")
    rps = run.extra.get("hits_rps", {})
    result["hits_rps"] = {name: round(statistics.median(v)) for name, v in sorted(rps.items())}
    for mode in MODES:
        mg, bare = rps.get(f"modgate-{mode}"), rps.get(f"bare-{mode}")
        if mg and bare:
            result[f"hits_rps_{mode}"] = {
                "modgate": round(statistics.median(mg)), "bare": round(statistics.median(bare)),
                "modgate_range": [round(min(mg)), round(max(mg))],
                "bare_range": [round(min(bare)), round(max(bare))],
            }  # fmt: skip
            ratios[f"hits_rps_ratio_{mode}"] = round(
                statistics.median(mg) / statistics.median(bare), 3
            )
            if md := rps.get(f"mitmdump-{mode}"):
                result[f"hits_rps_{mode}"]["mitmdump"] = round(statistics.median(md))
                ratios[f"hits_rps_ratio_mitmdump_{mode}"] = round(
                    statistics.median(mg) / statistics.median(md), 3
                )
    if scale := run.extra.get("scaling"):
        result["scaling"] = {}
        for mode in MODES:
            one, many = scale.get(f"{mode}-1"), scale.get(f"{mode}-{SCALE_WORKERS}")
            if not (one and many):
                continue
            rps1 = statistics.median(r for r, _ in one)
            rpsn = statistics.median(r for r, _ in many)
            result["scaling"][mode] = {
                "workers": SCALE_WORKERS, "rps_1": round(rps1), f"rps_{SCALE_WORKERS}": round(rpsn),
                "cpu_ms_per_request_1": round(statistics.median(c for _, c in one), 3),
                f"cpu_ms_per_request_{SCALE_WORKERS}": round(
                    statistics.median(c for _, c in many), 3),
            }  # fmt: skip
            ratios[f"scaling_{mode}"] = round(rpsn / rps1, 3) if rps1 else None
    result["ratios"] = ratios
    kept = ("cold_duplicate_fetches", "cold_sumdb_requests", "concurrent", "huge_mib", "rss_mib",
            "huge_seconds")  # fmt: skip
    for key in kept:
        if key in run.extra:
            result[key] = run.extra[key]
    rss = run.extra.get("rss_mib", {})
    result["peak_rss_mib"] = max((v for k, v in rss.items() if k != "idle"), default=None)
    result["cold_rss_mib"] = {k: round(v, 1) for k, v in sorted(run.rss.items())}
    result["skipped"] = dict(run.skipped)
    if "live" in run.extra:
        result["live"] = live.summary(run.extra["live"])
    result["errors"] = len(run.errors)
    result["error_list"] = run.errors[:10]
    result["targets"] = targets(result)
    if "upstream_raw_mb_s" not in run.extra:  # no part on the generated workload ran
        synthetic_only = {"modules", "artifacts", "zip_mb", "upstream_raw_mb_s", "hits_rps",
                          "ratios", "peak_rss_mib", "cold_rss_mib", "targets", "throttle_mib",
                          "clients", "rps_seconds", "latency_ms", "latencies_ms"}  # fmt: skip
        result = {k: v for k, v in result.items() if k not in synthetic_only}
    return result


def targets(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each of TARGETS: met, not met, or None when the run did not measure it."""
    r, rps = result["ratios"], result.get("hits_rps", {})

    def at_most(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    colds = [v for k, v in r.items() if k.startswith("cold_over_direct_") and "peer" not in k]
    conc = result.get("concurrent")
    workers = result.get("workers") or 1
    peaks = [result.get("peak_rss_mib"), *result.get("cold_rss_mib", {}).values()]
    peaks = [v for k, v in zip(["huge", *result.get("cold_rss_mib", {})], peaks, strict=True)
             if v is not None and "peer" not in k]  # fmt: skip
    endpoint, goproxy = rps.get("modgate-goproxy"), rps.get("peer-goproxy-goproxy")
    hits_proxy = r.get("hits_rps_ratio_proxy")
    return {
        "cold_le_0.9x_direct": None if not colds or None in colds
        else all(v <= 0.9 for v in colds),
        "warm_endpoint_le_goproxy": at_most(r.get("warm_over_goproxy_goproxy"), 1.0),
        "warm_remote_le_1.3x_goproxy": at_most(r.get("warm_over_goproxy_remote"), 1.3),
        "hits_endpoint_ge_goproxy": None if not (endpoint and goproxy) else endpoint >= goproxy,
        "hits_proxy_ge_90pct_bare": None if hits_proxy is None else hits_proxy >= 0.9,
        "concurrent_clean": None if conc is None
        else conc["errors"] == 0 and conc["max_fetches_per_artifact"] == 1,
        "rss_le_100mib": None if not peaks else max(peaks) / workers <= 100,
    }  # fmt: skip


def table(cfg: dict[str, Any], wl: workload.Workload, run: Run, result: dict[str, Any]) -> str:
    lines = [] if "upstream_raw_mb_s" not in run.extra else synthetic_table(cfg, wl, run, result)
    if "live" in result:
        lines += [*live.table(result["live"]), ""]
    lines += [f"{what}: skipped: {why}" for what, why in result["skipped"].items()]
    lines.append(f"errors: {result['errors']}" + "".join(f"\n  {e}" for e in run.errors[:10]))
    return "\n".join(lines)


def synthetic_table(
    cfg: dict[str, Any], wl: workload.Workload, run: Run, result: dict[str, Any]
) -> list[str]:
    lines = [
        f"modgate bench: {len(wl.modules)} modules, {wl.zip_bytes / 1e6:.0f} MB of zips per "
        f"download; upstream {cfg['latency_ms']:g} ms/request, "
        + (f"{cfg['throttle_mib']:g} MiB/s per connection" if cfg["throttle_mib"] else "no cap")
        + f" (serves {result['upstream_raw_mb_s']} MB/s uncapped); http2 "
        + ("on" if result["http2"] else "off") + f"; {cfg['reps']} repetition(s)",
        "",
        f"{'go mod download':46} {'median s':>9} {'min':>7} {'max':>7}   compared",
    ]  # fmt: skip
    r = result["ratios"]
    for variant in _variant_order(cfg):
        values = run.times.get(variant)
        if not values:
            continue
        lines.append(f"{_variant_name(cfg, variant):46} {statistics.median(values):9.2f} "
                     f"{min(values):7.2f} {max(values):7.2f}   {_note(r, variant)}")  # fmt: skip
    lines += ["", *side_by_side(cfg, result), ""]
    if conc := result.get("concurrent"):
        lines.append(
            f"{conc['clients']} clients at once, cold ({conc['modules']} modules each): "
            f"{conc['errors']} errors, {conc['artifacts_fetched']} artifacts fetched, at most "
            f"{conc['max_fetches_per_artifact']} fetch per artifact, {conc['seconds']:.1f}s"
        )
    if rss := result.get("rss_mib"):
        secs = result.get("huge_seconds", {})
        lines.append(
            f"peak RSS, {result['huge_mib']} MiB module: "
            + ", ".join(f"{k} {v:.0f} MiB" + (f" ({secs[k]:.1f}s)" if k in secs else "")
                        for k, v in rss.items())
        )  # fmt: skip
    for mode, sc in result.get("scaling", {}).items():
        n = sc["workers"]
        lines.append(
            f"small cached hits, {MODE_NAMES[mode]}, 1 worker -> {n}: {sc['rps_1']} -> "
            f"{sc[f'rps_{n}']} requests/s ({r[f'scaling_{mode}']:.2f}x, {os.cpu_count()} cores "
            f"shared with the client); server CPU {sc['cpu_ms_per_request_1']:.3f} -> "
            f"{sc[f'cpu_ms_per_request_{n}']:.3f} ms a request"
        )
    for mode in MODES:
        if hit := result.get(f"hits_rps_{mode}"):
            line = (
                f"small cached hits, {MODE_NAMES[mode]}: modgate {hit['modgate']} requests/s "
                f"{hit['modgate_range']}, bare {hit['bare']} {hit['bare_range']} "
                f"({r[f'hits_rps_ratio_{mode}'] * 100:.0f}%)"
            )
            if "mitmdump" in hit:
                share = r[f"hits_rps_ratio_mitmdump_{mode}"] * 100
                line += f", mitmdump {hit['mitmdump']} ({share:.0f}%)"
            lines.append(line)
    lines.append("")
    marks = {True: "met", False: "NOT MET", None: "not measured"}
    for key, text in TARGETS.items():
        lines.append(f"target {text:45} {marks[result['targets'][key]]}")
    lines.append("")
    return lines


def _variant_order(cfg: dict[str, Any]) -> list[str]:
    order = []
    for latency in cfg["latencies_ms"]:
        sfx = latency_suffix(cfg, latency)
        order += [f"{v}{sfx}" for v in ("direct", "cold-proxy", "cold-goproxy")]
        order += [f"cold-peer-{k}{sfx}" for k in PEERS]
    order += ["file", "gohttp", "warm-proxy", "warm-remote", "warm-goproxy",
              *(f"warm-peer-{k}" for k in PEERS),
              "bare-proxy", "bare-goproxy"]  # fmt: skip
    return order


def _variant_name(cfg: dict[str, Any], variant: str) -> str:
    base, _, at = variant.partition("@")
    names = {"direct": "direct from the upstream", "file": "GOPROXY=file:// (physical limit)",
             "gohttp": "Go net/http file server (HTTP limit)"}  # fmt: skip
    for kind, label in (("cold", "modgate cold"), ("warm", "modgate warm, upstream down"),
                        ("bare", "bare mitmproxy")):  # fmt: skip
        for mode in MODES:
            names[f"{kind}-{mode}"] = f"{label}, {MODE_NAMES[mode]}"
    names["warm-remote"] = "modgate warm, HTTPS proxy, no loopback redirect"
    for k, label in PEER_NAMES.items():
        names[f"cold-peer-{k}"] = f"{label} cold"
        names[f"warm-peer-{k}"] = f"{label} warm, upstream down"
    latency = f" ({at})" if at else (f" ({cfg['latency_ms']:g}ms)" if len(cfg["latencies_ms"]) > 1
                                     and not base.startswith(("file", "gohttp", "warm", "bare"))
                                     else "")  # fmt: skip
    return names[base] + latency


def _note(r: dict[str, Any], variant: str) -> str:
    base, _, at = variant.partition("@")
    sfx = f"@{at}" if at else ""
    kind, _, mode = base.partition("-")
    match kind:
        case "cold":
            return f"{r[f'cold_over_direct_{mode}{sfx}']}x direct"
        case "warm" if mode.startswith("peer-") or mode == "remote":
            return f"{r[f'warm_over_file_{mode}']}x file"
        case "warm":
            return (f"{r[f'warm_over_file_{mode}']}x file, {r[f'warm_over_gohttp_{mode}']}x Go "
                    f"http, {r[f'warm_over_bare_{mode}']}x bare")  # fmt: skip
        case "bare":
            return f"{r[f'bare_over_file_{mode}']}x file"
        case "gohttp":
            return f"{r['gohttp_over_file']}x file"
    return ""


def side_by_side(cfg: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """The issue's table: modgate's two modes, the peers and the limit, one row per measure."""
    r, rps, rss = result["ratios"], result.get("hits_rps", {}), result.get("cold_rss_mib", {})
    columns = [("goproxy", "modgate endpoint"), ("proxy", "modgate proxy"),
               *((f"peer-{k}", label) for k, label in PEER_NAMES.items())]  # fmt: skip

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    def times(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    def row(label: str, values: list[str], limit: str) -> str:
        return f"{label:34}" + "".join(f"{v:>17}" for v in values) + f"   {limit}"

    lines = [row("side by side", [name for _, name in columns], "limit")]
    for latency in cfg["latencies_ms"]:
        sfx = latency_suffix(cfg, latency)
        lines.append(row(f"cold vs direct, {latency:g} ms upstream",
                         [times(r.get(f"cold_over_direct_{m}{sfx}")) for m, _ in columns],
                         "-"))  # fmt: skip
    gohttp = r.get("gohttp_over_file")
    lines.append(row("warm vs GOPROXY=file://",
                     [times(r.get(f"warm_over_file_{m}")) for m, _ in columns],
                     f"Go file server {times(gohttp)}"))  # fmt: skip
    remote = r.get("warm_over_goproxy_remote")
    lines.append(row("warm vs goproxy's warm",
                     [times(r.get(f"warm_over_goproxy_{m}")) if m in MODES else "-"
                      for m, _ in columns],
                     f"proxy, no loopback redirect {times(remote)}"))  # fmt: skip
    hits = {"goproxy": rps.get("modgate-goproxy"), "proxy": rps.get("modgate-proxy")}
    hits.update({f"peer-{k}": rps.get(f"peer-{k}-goproxy") for k in PEER_NAMES})
    lines.append(row("small cached hits, requests/s", [cell(hits[m], "d") for m, _ in columns],
                     f"Go file server {cell(rps.get('gohttp-goproxy'), 'd')}"))  # fmt: skip
    peaks = {m: max((v for k, v in rss.items() if k.partition("@")[0] == f"cold-{m}"),
                    default=None) for m, _ in columns}  # fmt: skip
    lines.append(row("peak RSS, cold run, MiB", [cell(peaks[m], ".0f") for m, _ in columns],
                     "(server and its children)"))  # fmt: skip
    return lines


def reproduce(args: argparse.Namespace, cfg: dict[str, Any]) -> str:
    parts = ["scripts/bench"]
    if args.quick:
        parts.append("--quick")
    latencies = ",".join(f"{v:g}" for v in cfg["latencies_ms"])
    parts += ["--reps", str(cfg["reps"]), "--latency-ms", latencies,
              "--throttle-mib", f"{cfg['throttle_mib']:g}", "--clients", str(cfg["clients"]),
              "--rps-seconds", f"{cfg['rps_seconds']:g}"]  # fmt: skip
    if args.modules:
        parts += ["--modules", str(args.modules)]
    if args.http2 is not None:
        parts.append("--http2" if args.http2 else "--no-http2")
    if args.workers != 1:
        parts += ["--workers", str(args.workers)]
    if args.source:
        parts += ["--source", str(args.source)]
    for kind in PEERS:
        if getattr(args, kind) is not None:
            parts += [f"--{kind}", str(getattr(args, kind))]
    if args.only:
        parts += ["--only", args.only]
    if args.live_projects:
        parts += ["--live-projects", str(args.live_projects)]
    return shlex.join(parts)


if __name__ == "__main__":
    sys.exit(main())
