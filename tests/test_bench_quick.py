"""scripts/bench --quick runs end to end, so the benchmark cannot rot (issues 6, 13).

It checks that the run completes, that its one JSON line has every key a reader of
the report relies on, and that nothing failed. Never timings: the machine is shared.
With the peers' binaries where scripts/build-peers puts them, it also runs the quick
bench with the peers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from world.gate import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
KEYS = {
    "bench", "quick", "reps", "latency_ms", "throttle_mib", "http2", "modules", "zip_mb",
    "upstream_raw_mb_s", "direct_s", "file_s", "gohttp_s", "cold-proxy_s", "cold-goproxy_s",
    "warm-proxy_s", "warm-remote_s", "warm-goproxy_s", "bare-proxy_s", "bare-goproxy_s", "hits_rps_proxy",
    "hits_rps_goproxy", "ratios", "concurrent", "rss_mib", "peak_rss_mib", "errors", "targets",
}  # fmt: skip
PER_MODE = ("warm_over_file", "warm_over_gohttp", "cold_over_direct", "warm_over_bare",
            "hits_rps_ratio")  # fmt: skip
RATIOS = {f"{name}_{mode}" for name in PER_MODE for mode in ("proxy", "goproxy")}
RATIOS |= {"gohttp_over_file", "warm_over_file_remote"}


# Where scripts/build-peers puts the peers by default (its PEERS_DIR).
PEERS_DIR = Path(
    os.environ.get(
        "PEERS_DIR", Path(tempfile.gettempdir()) / f"modgate-bench-{os.getuid()}" / "peers"
    )
)


def bench(
    *args: str, timeout: float, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    """Run scripts/bench; its JSON line, parsed, and its table."""
    done = subprocess.run(
        [str(REPO / "scripts" / "bench"), *args], capture_output=True, text=True,
        timeout=timeout, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout
    result: dict[str, Any] = json.loads(lines[0])
    assert result["errors"] == 0, result["error_list"]
    return result, done.stdout


@pytest.mark.timeout(240)  # the first run on a machine also compiles the Go load client
def test_quick_bench_reports_every_measure_and_no_error(tmp_path: Path) -> None:
    # A peer that is not there is skipped with a line saying why, not an error.
    result, stdout = bench(
        "--quick", "--workdir", str(tmp_path), "--athens", str(tmp_path / "no-athens"),
        timeout=230,
    )  # fmt: skip
    assert result["skipped"] == {
        "peer goproxy": "no --goproxy given (scripts/build-peers builds it)",
        "peer athens": f"--athens {tmp_path / 'no-athens'}: not an executable file",
    }
    assert "peer athens: skipped: --athens" in stdout
    assert "live" not in result and "live" not in result["parts"]
    assert result.keys() >= KEYS, KEYS - result.keys()
    assert result["ratios"].keys() >= RATIOS
    assert all(isinstance(result["ratios"][k], float) for k in RATIOS), result["ratios"]
    assert result["quick"] is True
    # Scaling, measured in the same run: one worker against two, and the CPU per request.
    for mode in ("proxy", "goproxy"):
        sc = result["scaling"][mode]
        assert sc["rps_1"] > 0 and sc["rps_2"] > 0, sc
        assert 0 < sc["cpu_ms_per_request_1"] < 100 and 0 < sc["cpu_ms_per_request_2"] < 100, sc
        assert isinstance(result["ratios"][f"scaling_{mode}"], float)
    assert "1 worker -> 2:" in stdout
    conc = result["concurrent"]
    assert conc["errors"] == 0 and conc["max_fetches_per_artifact"] == 1, conc
    assert result["cold_duplicate_fetches"] == 0
    assert set(result["targets"]) == {
        "cold_le_0.9x_direct", "warm_endpoint_le_goproxy", "warm_remote_le_1.3x_goproxy",
        "hits_endpoint_ge_goproxy", "hits_proxy_ge_90pct_bare", "concurrent_clean",
        "rss_le_100mib",
    }  # fmt: skip
    # Without goproxy, the targets measured against it are not measured, not met or failed.
    assert result["targets"]["warm_endpoint_le_goproxy"] is None
    assert result["targets"]["hits_endpoint_ge_goproxy"] is None
    assert result["targets"]["rss_le_100mib"] is not None
    assert "reproduce: scripts/bench --quick" in stdout
    assert result["cold_rss_mib"].keys() == {"cold-proxy", "cold-goproxy"}
    # modgate verifies what it fetches: the checksum database is asked.
    assert all(n > 0 for n in result["cold_sumdb_requests"].values()), result


@pytest.mark.timeout(600)
def test_quick_bench_with_the_peers_reports_their_rows(tmp_path: Path) -> None:
    binaries = {kind: PEERS_DIR / kind for kind in ("goproxy", "athens")}
    missing = [str(path) for path in binaries.values() if not os.access(path, os.X_OK)]
    if missing:
        pytest.skip(f"no peers at {', '.join(missing)}: build them with scripts/build-peers")
    result, stdout = bench(
        "--quick", "--workdir", str(tmp_path), "--only", "downloads,hits", "--latency-ms", "5,1",
        *(f"--{kind}={path}" for kind, path in binaries.items()), timeout=580,
    )  # fmt: skip
    assert result["skipped"] == {}
    assert result["latencies_ms"] == [5.0, 1.0]
    for kind in binaries:
        for variant in (f"cold-peer-{kind}", f"cold-peer-{kind}@1ms", f"warm-peer-{kind}"):
            assert result[f"{variant}_s"]["median"] > 0, variant
        for ratio in (f"cold_over_direct_peer-{kind}", f"cold_over_direct_peer-{kind}@1ms",
                      f"warm_over_file_peer-{kind}"):  # fmt: skip
            assert isinstance(result["ratios"][ratio], float), ratio
        assert result["hits_rps"][f"peer-{kind}-goproxy"] > 0
        assert result["cold_rss_mib"][f"cold-peer-{kind}"] > 0
        # The peer verified against the same checksum database as modgate.
        assert result["cold_sumdb_requests"][f"cold-peer-{kind}"] > 0
    for mode in ("proxy", "goproxy"):
        assert isinstance(result["ratios"][f"cold_over_direct_{mode}@1ms"], float)
    side = stdout[stdout.index("side by side") :].splitlines()
    assert side[0].split()[-3:] == ["goproxy", "Athens", "limit"], side[0]
    assert side[1].startswith("cold vs direct, 5 ms upstream")
    assert side[2].startswith("cold vs direct, 1 ms upstream")
    assert all(cell.endswith("x") for cell in side[1].split()[6:10]), side[1]  # all measured
    # The warm comparisons with goproxy: both modes, and the HTTPS proxy as a client
    # on another machine gets it (no loopback redirect).
    warm = next(line for line in side if line.startswith("warm vs goproxy's warm"))
    for ratio in ("warm_over_goproxy_goproxy", "warm_over_goproxy_proxy",
                  "warm_over_goproxy_remote"):  # fmt: skip
        assert isinstance(result["ratios"][ratio], float), ratio
        assert f"{result['ratios'][ratio]:.2f}x" in warm, (ratio, warm)
    assert result["targets"]["warm_endpoint_le_goproxy"] is not None
    assert result["targets"]["hits_endpoint_ge_goproxy"] is not None


@pytest.mark.timeout(240)
def test_live_part_is_skipped_with_its_reason_when_the_registry_does_not_answer(
    tmp_path: Path,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "GOPROXY": closed, "GOFLAGS": "", "GOENV": "off"}
    result, stdout = bench(
        "--quick", "--only", "live", "--workdir", str(tmp_path), timeout=230, env=env
    )  # fmt: skip
    why = result["skipped"]["live"]
    assert why.startswith("the registry (go env GOPROXY): github.com/spf13/viper@"), why
    assert f"live: skipped: {why}" in stdout
    assert "live" not in result and "side by side" not in stdout


def test_latency_list_is_parsed_and_checked() -> None:
    sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests")]
    try:
        import bench as bench_py
    finally:
        del sys.path[:2]
    assert bench_py._parser().parse_args(["--latency-ms", "2,20"]).latency_ms == [2.0, 20.0]
    for bad in ("2,2", "x", "-1", ""):
        with pytest.raises(SystemExit):
            bench_py._parser().parse_args(["--latency-ms", bad])
