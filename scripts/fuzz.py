"""Coverage-guided fuzzing of every parser that reads upstream, client or file input.

Each target of tests/fuzz_targets.py runs in its own process under atheris (libFuzzer
for Python), starting from the target's valid seeds, for a fixed time. The property is
the one tests/test_fuzz_parsers.py checks: only modgate's own errors may escape. An
input that lets anything else escape stops that target and is saved as a crash file.
Prints a table and one JSON line; exits 1 if any target let an exception escape.

    scripts/fuzz                    every target, the default budget (30 s each)
    scripts/fuzz --seconds 300 zip go_mod
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECONDS = 30
MAX_LEN = 16384  # bytes per input: room for deep nesting and small zips


def fuzz_one(name: str, seconds: int, out: Path) -> None:
    """Run inside the child process: instrument modgate, then hand over to libFuzzer."""
    import atheris

    sys.path.insert(0, str(ROOT / "tests"))
    with atheris.instrument_imports(include=["modgate", "yaml", "fuzz_targets"]):
        import fuzz_targets
    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(fuzz_targets.seeds()[name]):
        (corpus / f"seed-{i}").write_bytes(seed)
    target = fuzz_targets.TARGETS[name]

    def test_one_input(data: bytes) -> None:
        fuzz_targets.check(target, data)

    sys.setrecursionlimit(1000)  # the interpreter's default, whatever atheris set
    atheris.Setup(
        [sys.argv[0], f"-max_total_time={seconds}", "-print_final_stats=1", f"-max_len={MAX_LEN}",
         "-timeout=30", f"-artifact_prefix={out}/{name}-", str(corpus)],
        test_one_input,
    )  # fmt: skip
    atheris.Fuzz()


def run(name: str, seconds: int, out: Path) -> dict[str, object]:
    """Fuzz one target in a child process; its inputs tried, time, and what escaped."""
    log = out / f"{name}.log"
    started = time.monotonic()
    with log.open("w") as stream:
        child = [sys.executable, __file__, "--child", name, "--seconds", str(seconds)]
        done = subprocess.run(
            [*child, "--out", str(out)], stdout=stream, stderr=subprocess.STDOUT, check=False
        )
    text = log.read_text(errors="replace")
    runs = re.search(r"stat::number_of_executed_units: (\d+)", text)
    crashes = sorted(str(p) for p in out.glob(f"{name}-*"))
    escaped = re.search(r"=== Uncaught Python exception: ===\n(.*?)\n", text)
    return {
        "target": name,
        "seconds": round(time.monotonic() - started, 1),
        "inputs": int(runs.group(1)) if runs else 0,
        "escaped": len(crashes) or int(done.returncode != 0),
        "exception": escaped.group(1) if escaped else "",
        "crash_files": crashes,
        "log": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="targets (default: all)")
    seconds = int(os.environ.get("FUZZ_SECONDS", DEFAULT_SECONDS))
    parser.add_argument(
        "--seconds", type=int, default=seconds,
        help=f"budget per target in seconds (default {DEFAULT_SECONDS}, or $FUZZ_SECONDS)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="corpora, logs, crashes (default: a temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="modgate-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        fuzz_one(args.child, args.seconds, out)  # before anything imports modgate
        return 0
    from fuzz_targets import TARGETS

    names = args.targets or list(TARGETS)
    unknown = sorted(set(names) - TARGETS.keys())
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    print(f"fuzz: {len(names)} target(s), {args.seconds} s each, work in {out}", file=sys.stderr)
    results: list[dict[str, object]] = []
    inputs = escaped = 0
    print(f"{'target':<14} {'seconds':>8} {'inputs':>10} {'escaped':>8}")
    for name in names:
        result = run(name, args.seconds, out)
        results.append(result)
        inputs += int(str(result["inputs"]))
        escaped += int(str(result["escaped"]))
        row = f"{name:<14} {result['seconds']:>8} {result['inputs']:>10} {result['escaped']:>8}"
        if result["escaped"]:
            row += f"  {result['exception']} ({result['crash_files'] or result['log']})"
        print(row, flush=True)
    total = {
        "seconds_per_target": args.seconds,
        "inputs": inputs,
        "escaped": escaped,
        "targets": {r["target"]: {"inputs": r["inputs"], "escaped": r["escaped"]} for r in results},
    }
    print(f"{'total':<14} {'':>8} {total['inputs']:>10} {total['escaped']:>8}")
    print(json.dumps(total, sort_keys=True))
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    sys.exit(main())
