"""Where one modgate worker's memory goes (issue 13, "Memory"): a report, not a target.

Three views of the same worker (`modgate run --workers 1`), on the workload scripts/bench
generates (a 150-module graph behind a loopback upstream with its own checksum database):

1. **Code.** The resident set of a fresh interpreter as it imports, layer after layer, what
   a worker loads: modgate's core, its upstream client, the rest of modgate, mitmproxy.
   Most of a worker's memory is here, paid once per process whatever the traffic.
2. **The run.** The worker's RSS idle after start, and its peak over a cold download of the
   graph (HTTPS proxy mode) and over the huge module's cold download (over 200 MiB).
3. **The heap at its peak.** The same runs again with the worker under memray: its heap's
   high-water mark and what held it then, by package of the allocating code and by
   line (memray's own view, `memray summary` on the capture, gives the same).

It prints a table and one JSON line. `scripts/bench_memory --help` for the knobs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[1] / "tests"),
]

from benchlib import workload  # noqa: E402
from benchlib.procs import Modgate, PeakRss, SlowSumdb, remove, timed_go  # noqa: E402

from world import Upstream  # noqa: E402

MIB = 1 << 20
# (what, modules imported on top of the layers before it), in the order a worker loads them
LAYERS = (
    ("the interpreter", ()),
    ("the standard library it uses: asyncio, ssl, sqlite3, email, http, json", (
        "asyncio", "ssl", "sqlite3", "email.parser", "http.client", "json", "zipfile", "uuid")),
    ("diskcache, pyyaml, cryptography", (
        "diskcache", "yaml", "cryptography.hazmat.primitives.asymmetric.ed25519")),
    ("aiohttp (the upstream client)", ("aiohttp",)),
    ("modgate's core: gateway, verify, store, rules, upstream", (
        "modgate.gateway", "modgate.verify", "modgate.store", "modgate.rules", "modgate.upstream")),
    ("the rest of modgate: CLI, teams, trace, metrics", (
        "modgate.cli", "modgate.teams", "modgate.trace", "modgate.metrics")),
    ("mitmproxy: master, proxy layers, the addons modgate runs", (
        "modgate.addons", "mitmproxy.master", "mitmproxy.proxy.layers")),
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--modules", type=int, default=150, help="modules in the graph (default 150)"
    )
    parser.add_argument("--latency-ms", type=float, default=20, help="upstream delay (default 20)")
    parser.add_argument("--top", type=int, default=12, help="rows of the heap tables (default 12)")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "modgate-bench-memory"
    )
    parser.add_argument("--no-memray", action="store_true", help="skip the heap view")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"layers_mib": layers()}
    workdir = args.workdir.expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    wl = workload.build(replace(workload.Spec(), modules=args.modules), workdir)
    here = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    try:
        result["run_mib"] = run(wl, here, args.latency_ms, memray=None)
        if not args.no_memray:
            capture = here / "worker.memray"
            result["run_under_memray_mib"] = run(wl, here, args.latency_ms, memray=capture)
            result["heap"] = heap(capture, args.top)
    finally:
        remove(here)
    print(table(result))
    print(json.dumps(result, sort_keys=True))
    return 0


def layers() -> list[tuple[str, float]]:
    """RSS (MiB) of one fresh interpreter after each layer of imports, cumulatively."""
    code = (
        "import importlib, json, sys\n"
        "def rss():\n"
        "    status = open('/proc/self/status').read()\n"
        "    return int(status.split('VmRSS:')[1].split()[0]) / 1024\n"
        "from modgate import memory\n"
        "memory.without_mitmproxy_addon_index()\n"  # as `modgate run` does
        f"out = []\nfor what, mods in {LAYERS!r}:\n"
        "    for m in mods: importlib.import_module(m)\n"
        "    out.append((what, round(rss(), 1)))\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True
    )
    return [(str(what), float(rss)) for what, rss in json.loads(done.stdout)]


def run(
    wl: workload.Workload, here: Path, latency_ms: float, memray: Path | None
) -> dict[str, float]:
    """Peak RSS (MiB) of one worker: idle, over a cold download of the graph, over the huge
    module's cold download; with `memray`, under memray writing its capture there."""
    upstream = Upstream(wl.tree, delay=latency_ms / 1000)
    sumdb = SlowSumdb(latency_ms / 1000)
    for module, version, zip_h1, mod_h1 in wl.sums:
        sumdb.add(module, version, zip_h1, mod_h1)
    name = "memray" if memray else "plain"
    out: dict[str, float] = {}
    with upstream, sumdb:
        gate = Modgate(here / name, upstream.url, sumdb.gosumdb, ("--workers", "1"))
        if memray:
            # -O: `modgate run` would exec itself with it (cli._optimised), out of memray's view
            gate.launcher = (sys.executable, "-O", "-m", "memray", "run", "-q", "-o", str(memray))
        with gate.start():
            out["idle"] = PeakRss(gate.pid).sample() / MIB
            for case, modules in (("cold graph", None), ("cold huge module", (wl.huge,))):
                home = here / f"{name}-client"
                remove(home)
                app = wl.app(home / "app", modules)
                with PeakRss(gate.pid) as peak:
                    seconds, error = timed_go(
                        ["mod", "download"], gate.client_env(home, "proxy"), app, 900
                    )
                remove(home)
                if error:
                    raise RuntimeError(f"{case}: {error}")
                out[case] = peak.peak / MIB
                print(
                    f"bench_memory: {name}: {case}: {seconds:.1f}s, peak {out[case]:.0f} MiB",
                    file=sys.stderr,
                )
    return {k: round(v, 1) for k, v in out.items()}


def heap(capture: Path, top: int) -> dict[str, Any]:
    """The heap at its high-water mark, by package of the allocating frame and by line."""
    from memray import FileReader

    by_package: Counter[str] = Counter()
    by_line: Counter[str] = Counter()
    with FileReader(capture) as reader:
        peak = reader.metadata.peak_memory
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            frames = record.stack_trace()
            function, path, line = frames[0] if frames else ("?", "?", 0)
            by_package[_package(path)] += record.size
            by_line[f"{_short(path)}:{line} {function}"] += record.size
    return {
        "peak_mib": round(peak / MIB, 1),
        "by_package_mib": [(k, round(v / MIB, 2)) for k, v in by_package.most_common(top)],
        "by_line_mib": [(k, round(v / MIB, 2)) for k, v in by_line.most_common(top)],
    }


def _package(path: str) -> str:
    """'mitmproxy', 'modgate', 'aiohttp', ... or 'python' (the standard library)."""
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if "addons" in parts and "modgate" in parts:
        return "modgate"
    return "python" if path.endswith(".py") else "native"


def _short(path: str) -> str:
    parts = Path(path).parts
    for anchor in ("site-packages", "addons"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return "/".join(parts[-2:])


def table(r: dict[str, Any]) -> str:
    lines = ["one worker's resident set, MiB (fresh interpreter, imports added layer by layer)"]
    before = 0.0
    for what, rss in r["layers_mib"]:
        lines.append(f"  {rss:6.1f}  +{rss - before:5.1f}  {what}")
        before = rss
    for key, title in (
        ("run_mib", "a started worker"),
        ("run_under_memray_mib", "the same under memray"),
    ):
        if key in r:
            lines.append(
                f"{title}, peak RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in r[key].items())
            )
    if "heap" in r:
        h = r["heap"]
        lines.append(f"the heap at its high-water mark (memray): {h['peak_mib']} MiB, held by")
        lines += [f"  {mib:7.2f}  {what}" for what, mib in h["by_package_mib"]]
        lines.append("  ... and by line")
        lines += [f"  {mib:7.2f}  {what}" for what, mib in h["by_line_mib"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
