"""`modgate prefetch`: the command line of prefetch.py, with a progress bar (tqdm) and a
summary. Through a running modgate (`--goproxy`, its GOPROXY endpoint), or standalone on
a cache directory (`--cache-dir`: a modgate of its own is started for the run)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from modgate import goenv, prefetch
from modgate.errors import ModgateError
from modgate.teams import netrc_credentials


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from modgate.cli import DEFAULT_GOPROXY_PORT

    p = sub.add_parser(
        "prefetch",
        help="fill the cache with what some builds need, before the network is gone",
        description=prefetch.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "targets",
        nargs="+",
        metavar="go.mod|go.sum|go.work|DIR|-",
        help="what to prefetch for; - reads module@version lines",
    )
    p.add_argument(
        "--goproxy",
        default=f"http://127.0.0.1:{DEFAULT_GOPROXY_PORT}",
        help="the running modgate's GOPROXY endpoint (default: %(default)s)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="standalone: start a modgate of its own on this cache for the run",
    )
    p.add_argument(
        "--rules",
        help="with --cache-dir: its rules file ('' for none; default: as "
        "modgate run: ./rules.yaml if it exists)",
    )
    p.add_argument("--jobs", type=int, default=8, help="versions at a time (default: %(default)s)")
    p.add_argument(
        "--toolchain",
        action="store_true",
        help="also the Go toolchain each go.mod's toolchain (or go) line names",
    )
    p.set_defaults(func=cmd_prefetch)


def cmd_prefetch(args: argparse.Namespace) -> int:
    with _endpoint(args) as endpoint:
        wants = _wants(args, endpoint)
        values = goenv.values(["GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GOOS", "GOARCH"])
        database = _database(endpoint, values.get("GOSUMDB", ""))
        private = values.get("GONOSUMDB") or values.get("GOPRIVATE") or ""
        outcome = _run(endpoint, wants, database, private, args.jobs)
    _summary(outcome, len(wants))
    return 1 if outcome.refused or outcome.failed else 0


def _wants(args: argparse.Namespace, endpoint: str) -> set[prefetch.Want]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    wants: set[prefetch.Want] = set()
    goos = platform.system().lower()
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for target in args.targets:
        if target == "-":
            wants |= prefetch.from_lines(sys.stdin.read())
            continue
        path = Path(target)
        if path.is_dir():
            path = path / "go.work" if (path / "go.work").is_file() else path / "go.mod"
        if not path.is_file():
            raise ModgateError(f"{target}: no such go.mod, go.sum, go.work or directory")
        mods = [path] if path.name == "go.mod" else []
        if path.name == "go.work":
            mods = prefetch.workspace_modules(path)
        elif path.name == "go.sum":
            wants |= prefetch.from_go_sum(path.read_text(encoding="utf-8"))
        elif path.name != "go.mod":
            wants |= prefetch.from_lines(path.read_text(encoding="utf-8"))
        for go_mod in mods:
            print(f"prefetch: reading the build list of {go_mod}", file=sys.stderr)
            wants |= prefetch.build_list(go_mod, endpoint, env)
            if args.toolchain:
                wants |= prefetch.toolchains(go_mod, goos, goarch)
    return wants


def _database(endpoint: str, gosumdb: str) -> str:
    """The checksum database go uses, if the endpoint serves it (`supported`)."""
    import urllib.request

    from modgate.config import parse_gosumdb

    try:
        db = parse_gosumdb(gosumdb) if gosumdb else None
    except ValueError:
        return ""
    if db is None:
        return ""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{endpoint}/sumdb/{db.name}/supported")
    if auth := netrc_credentials(endpoint):
        request.add_header("Authorization", auth)
    try:
        with opener.open(request, timeout=10) as r:
            return db.name if r.status == 200 else ""
    except OSError:
        return ""


def _run(
    endpoint: str, wants: set[prefetch.Want], database: str, private: str, jobs: int
) -> prefetch.Outcome:
    from tqdm import tqdm

    from modgate.patterns import match_prefix_patterns

    with tqdm(
        total=len(wants), unit=" versions", file=sys.stderr, dynamic_ncols=True, disable=None
    ) as bar:
        started = time.monotonic()

        def progress(n: int, size: int) -> None:
            rate = size / max(time.monotonic() - started, 1e-3) / (1 << 20)
            bar.set_postfix_str(f"{size / (1 << 20):.1f} MiB, {rate:.1f} MiB/s", refresh=False)
            bar.update(n)

        return asyncio.run(
            prefetch.fetch_all(
                endpoint,
                wants,
                database,
                lambda m: match_prefix_patterns(private, m),
                max(1, jobs),
                progress,
                # A modgate with teams asks who is fetching: .netrc, as go reads it.
                authorization=netrc_credentials(endpoint),
            )
        )


def _summary(outcome: prefetch.Outcome, total: int) -> None:
    print(
        f"prefetch: {total} versions: {len(outcome.fetched)} fetched, {len(outcome.cached)} "
        f"already cached, {len(outcome.refused)} refused, {len(outcome.failed)} failed "
        f"({outcome.bytes / (1 << 20):.1f} MiB)"
    )
    for name, why in sorted(outcome.refused.items()):
        print(f"  refused {name}: {why}")
    for name, why in sorted(outcome.failed.items()):
        print(f"  failed {name}: {why}")


@contextlib.contextmanager
def _endpoint(args: argparse.Namespace) -> Iterator[str]:
    """The running modgate's endpoint, or (with --cache-dir) one started for the run."""
    if args.cache_dir is None:
        yield args.goproxy.rstrip("/")
        return
    cache_dir = args.cache_dir.expanduser().absolute()
    with standalone(cache_dir, args.rules, cache_dir.parent) as endpoint:
        yield endpoint


@contextlib.contextmanager
def standalone(cache_dir: Path, rules: Path | str | None, confdir: Path) -> Iterator[str]:
    """A modgate of its own on `cache_dir` for as long as the block runs: its GOPROXY
    endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "modgate", "run", "--listen-port", "0",
               "--goproxy-port", str(port), "--cache-dir", str(cache_dir),
               "--confdir", str(confdir), "--quiet", "--workers", "1",
               # Its only client is this process: rules.yaml's teams would ask it who it is.
               "--set", "modgate_ignore_teams=true",
               *(["--rules", str(rules)] if rules is not None else [])]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    try:
        endpoint = _wait_for_banner(proc)
        # Its log must go somewhere, or a full pipe would stop it.
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        yield endpoint
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for_banner(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if m := re.search(r"GOPROXY endpoint (http://[^;\s]+);", line):
            return m.group(1)
    raise ModgateError("prefetch: modgate did not start:\n" + "".join(seen[-20:]))
