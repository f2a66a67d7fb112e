"""scripts/bench_memory: where one worker's memory goes (issue 13, "Memory"). Its own file
so the suite's workers run it beside test_bench_quick.py (files are the unit of
distribution: scripts/test runs --dist loadfile)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_bench_memory_says_where_a_workers_memory_goes(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "bench_memory"), "--modules", "6", "--latency-ms", "1",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=290, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    layers = [mib for _, mib in result["layers_mib"]]
    assert layers == sorted(layers) and layers[0] > 5, result["layers_mib"]  # each adds
    assert result["layers_mib"][-1][0].startswith("mitmproxy")
    for run in (result["run_mib"], result["run_under_memray_mib"]):
        assert run.keys() == {"idle", "cold graph", "cold huge module"}, run
        assert run["idle"] >= layers[-1] * 0.8, (run, layers)  # a worker holds its code
    heap = result["heap"]
    assert 1 < heap["peak_mib"] < 1000, heap
    # The heap's high-water mark, by package and by line, adds up to at most the peak.
    assert 0 < sum(mib for _, mib in heap["by_package_mib"]) <= heap["peak_mib"] + 0.01
    assert any(where.startswith("modgate/") or where == "modgate"
               for where, _ in heap["by_package_mib"] + heap["by_line_mib"]), heap  # fmt: skip
    assert "the heap at its high-water mark (memray)" in done.stdout
