"""scripts/bench --quick runs end to end, so the benchmark cannot rot (issue 6).

It checks that the run completes, that its one JSON line has every key a reader of
the report relies on, and that nothing failed. Never timings: the machine is shared.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
KEYS = {
    "bench", "quick", "reps", "latency_ms", "throttle_mib", "http2", "modules", "zip_mb",
    "upstream_raw_mb_s", "direct_s", "file_s", "gohttp_s", "cold-proxy_s", "cold-goproxy_s",
    "warm-proxy_s", "warm-goproxy_s", "bare-proxy_s", "bare-goproxy_s", "hits_rps_proxy",
    "hits_rps_goproxy", "ratios", "concurrent", "rss_mib", "peak_rss_mib", "errors", "targets",
}  # fmt: skip
PER_MODE = ("warm_over_file", "warm_over_gohttp", "cold_over_direct", "warm_over_bare",
            "hits_rps_ratio")  # fmt: skip
RATIOS = {f"{name}_{mode}" for name in PER_MODE for mode in ("proxy", "goproxy")}
RATIOS.add("gohttp_over_file")


@pytest.mark.timeout(240)  # the first run on a machine also compiles the Go load client
def test_quick_bench_reports_every_measure_and_no_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "bench"), "--quick", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=230, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["errors"] == 0, result["error_list"]
    assert result.keys() >= KEYS, KEYS - result.keys()
    assert result["ratios"].keys() >= RATIOS
    assert all(isinstance(result["ratios"][k], float) for k in RATIOS), result["ratios"]
    assert result["quick"] is True
    conc = result["concurrent"]
    assert conc["errors"] == 0 and conc["max_fetches_per_artifact"] == 1, conc
    assert result["cold_duplicate_fetches"] == 0
    assert set(result["targets"]) == {
        "warm_le_1.3x_file", "cold_le_1.1x_direct", "concurrent_clean", "huge_rss_le_150mib",
        "hits_ge_70pct_bare",
    }  # fmt: skip
    assert "reproduce: scripts/bench --quick" in done.stdout
