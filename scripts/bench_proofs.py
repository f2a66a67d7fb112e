"""CPU of the checksum-database proofs per lookup: a report, not a target.

Two steps, so the timing needs no network and compares versions on the same bytes:

    record GO_SUM OUT   look up every module version of a go.sum in `go env GOSUMDB`
                        (through `go env GOPROXY`, `--pace` seconds apart so the log grows between
                        answers, as on a cold download), and save the answers and every
                        tile their proofs read, as a pickle
    replay FILE         verify the recorded answers again with modgate's SumdbVerifier
                        and print the CPU seconds it took (median of `--reps`), with
                        `--concurrency` lookups at a time, each in rounds as
                        verify.Checker._with_tiles runs them: a round that lacks tiles
                        stops, and the lookup starts again once they are "fetched"

`--source DIR` runs another copy of the package (a checkout's addons/) to compare two
versions. The database's address and key come from `go env` at record time and are kept
only in the recording.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pickle
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


class _NeedTiles(BaseException):  # noqa: N818 (a signal, as verify._NeedTiles)
    def __init__(self, paths: list[str]) -> None:
        super().__init__(paths)
        self.paths = paths


def record(go_sum: Path, out: Path, pace: float) -> None:
    from modgate.config import parse_gosumdb

    goproxy, gosumdb = subprocess.run(
        ["go", "env", "GOPROXY", "GOSUMDB"], capture_output=True, text=True, check=True
    ).stdout.split()
    db = parse_gosumdb(gosumdb)
    assert db is not None, "GOSUMDB is off"
    # Through the proxy, as the go command asks it first ("Checksum database").
    proxy = next(u for u in goproxy.replace("|", ",").split(",") if u.startswith("http"))
    base = f"{proxy.rstrip('/')}/sumdb/{db.name}"
    versions = sorted(
        {tuple(line.split()[:2]) for line in go_sum.read_text().splitlines() if line.strip()}
    )
    wanted = sorted({(m, v.removesuffix("/go.mod")) for m, v in versions})

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"{base}/{path}", timeout=30) as r:
            data: bytes = r.read()
            return data

    from modgate.goproxy import escape

    start = time.monotonic()

    def lookup(mv: tuple[str, str]) -> tuple[float, str, str, bytes]:
        time.sleep(max(0.0, start + pace * wanted.index(mv) - time.monotonic()))
        return time.monotonic(), *mv, get(f"lookup/{escape(mv[0])}@{escape(mv[1])}")

    with ThreadPoolExecutor(16) as pool:
        answers = sorted(pool.map(lookup, wanted))
    tiles: dict[str, bytes] = {}

    from modgate.sumdb import SumdbVerifier

    def fetch(path: str) -> bytes:
        if path not in tiles:
            tiles[path] = get(path)
        return tiles[path]

    verifier = SumdbVerifier(db.key, fetch)
    for _, module, version, answer in answers:
        verifier.lookup_versions(module, (version, version + "/go.mod"), answer)
    lookups = [(m, v, a) for _, m, v, a in answers]
    out.write_bytes(pickle.dumps({"key": db.key, "lookups": lookups, "tiles": tiles}))
    print(f"recorded {len(lookups)} lookups, {len(tiles)} tiles, tree#{verifier.tree.n}")


def replay_once(recording: dict[str, Any], concurrency: int) -> tuple[float, int]:
    """CPU seconds to verify every recorded lookup with a fresh verifier; and rounds run."""
    sumdb = importlib.import_module("modgate.sumdb")
    tlog = importlib.import_module("modgate.sumdb.tlog")
    for name in dir(tlog):  # module-level memos start cold, as in a fresh process
        if hasattr(cache := getattr(tlog, name), "cache_clear"):
            cache.cache_clear()
    tiles: dict[str, bytes] = recording["tiles"]
    fetched: set[str] = set()  # the tiles of the lookup in its round (one runs at a time)

    def read(path: str) -> bytes:
        if path not in fetched:
            raise _NeedTiles([path])
        return tiles[path]

    def prefetch(paths: list[str]) -> None:
        if missing := [p for p in paths if p not in fetched]:
            raise _NeedTiles(missing)

    verifier = sumdb.SumdbVerifier(recording["key"], read, prefetch_tiles=prefetch)
    rounds = 0

    async def one(module: str, version: str, answer: bytes, mine: set[str]) -> None:
        nonlocal rounds
        while True:
            fetched.clear()
            fetched.update(mine)
            rounds += 1
            try:
                verifier.lookup_versions(module, (version, version + "/go.mod"), answer)
                return
            except _NeedTiles as need:
                mine.update(need.paths)
            await asyncio.sleep(0)

    async def run() -> None:
        gate = asyncio.Semaphore(concurrency)

        async def bounded(m: str, v: str, a: bytes) -> None:
            async with gate:
                await one(m, v, a, set())

        await asyncio.gather(*(bounded(m, v, a) for m, v, a in recording["lookups"]))

    start = time.process_time()
    asyncio.run(run())
    return time.process_time() - start, rounds


def replay(path: Path, reps: int, concurrency: int) -> None:
    recording = pickle.loads(path.read_bytes())
    times = []
    for _ in range(reps):
        cpu, rounds = replay_once(recording, concurrency)
        times.append(cpu)
    n = len(recording["lookups"])
    median = statistics.median(times)
    print(
        f"{n} lookups, {rounds} rounds, concurrency {concurrency}: median {median:.3f} s CPU "
        f"({1e3 * median / n:.2f} ms per lookup) over {reps} runs: "
        + " ".join(f"{t:.3f}" for t in times)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, help="the addons/ directory of another copy")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("go_sum", type=Path)
    rec.add_argument("out", type=Path)
    rec.add_argument("--pace", type=float, default=0.05, help="seconds between lookups")
    rep = sub.add_parser("replay")
    rep.add_argument("recording", type=Path)
    rep.add_argument("--reps", type=int, default=5)
    rep.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    source = args.source or Path(__file__).resolve().parents[1] / "addons"
    sys.path.insert(0, str(source.resolve()))
    if args.command == "record":
        record(args.go_sum, args.out, args.pace)
    else:
        replay(args.recording, args.reps, args.concurrency)


if __name__ == "__main__":
    main()
