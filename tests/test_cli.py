"""The modgate command as a user runs it: start-up errors, `modgate env`."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from world.gate import Gate, modgate_command


def run_modgate(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        modgate_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_run_refuses_a_malformed_rules_file_naming_line_and_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("proxies:\n  - url: https://proxy.modgate.test\n    upstrem: http://x\n")
    out = run_modgate("run", "--rules", str(rules), "--confdir", str(tmp_path / "c"), cwd=tmp_path)
    assert out.returncode == 2
    assert f"modgate: {rules}:3: proxies[0].upstrem: unknown field" in out.stderr
    assert "listening" not in out.stdout + out.stderr


def test_run_reads_rules_yaml_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("cache:\n  ttl: sometimes\n")
    out = run_modgate("run", "--confdir", str(tmp_path / "c"), cwd=tmp_path)
    assert out.returncode == 2
    assert "rules.yaml:2: cache.ttl: 'sometimes' is not a duration" in out.stderr


def test_run_with_rules_empty_reads_no_file_even_where_rules_yaml_is(tmp_path: Path) -> None:
    """`--rules ''` is "no rules file" (the defaults of `go env`), as the option says."""
    gate = Gate(tmp_path, None)  # runs in tmp_path, where a rules.yaml it must not read is
    (tmp_path / "rules.yaml").write_text("cache:\n  ttl: sometimes\n")
    gate.extra_args += ["--rules", "", "--set", "modgate_goproxy=https://proxy.modgate.test",
                        "--set", "modgate_gosumdb=off"]  # fmt: skip
    with gate:
        assert "gating https://proxy.modgate.test" in gate.output()


def test_run_refuses_a_cache_directory_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    gate = Gate(tmp_path, "proxies:\n  - url: https://proxy.modgate.test\n",
                cache_dir=blocker / "cache")  # fmt: skip
    try:
        gate.start()
        raise AssertionError("modgate started with an unusable cache directory")
    except RuntimeError as e:
        assert "exited 2" in str(e)
        assert f"cache directory {blocker / 'cache' / 'artifacts'} cannot be used" in str(e)
        assert "--cache-dir" in str(e)


def test_env_prints_a_bundle_with_system_cas_and_modgate_ca(tmp_path: Path) -> None:
    out = run_modgate("env", "--confdir", str(tmp_path), "--listen-port", "9123", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in out.stdout.splitlines()
    )
    assert exported["HTTPS_PROXY"] == "http://127.0.0.1:9123"
    bundle = Path(exported["SSL_CERT_FILE"])
    assert exported["GIT_SSL_CAINFO"] == str(bundle)
    pem = bundle.read_text()
    ca = (tmp_path / "mitmproxy-ca-cert.pem").read_text()
    assert ca in pem
    # Go replaces its whole root store with SSL_CERT_FILE: the system's CAs must be there too.
    assert pem.count("BEGIN CERTIFICATE") > 20


def test_env_goproxy_endpoint(tmp_path: Path) -> None:
    out = run_modgate("env", "--goproxy", "http://127.0.0.1:8081", cwd=tmp_path)
    assert out.stdout == "export GOPROXY=http://127.0.0.1:8081\n"


def test_run_sets_options_and_logs_what_it_gates(tmp_path: Path) -> None:
    trace_db = tmp_path / "elsewhere.db"
    rules = "proxies:\n  - url: https://proxy.modgate.test\nchecksum:\n  databases: []\n"
    gate = Gate(tmp_path, rules)
    gate.extra_args = ["--set", f"modgate_trace_db={trace_db}"]
    with gate:
        pass
    assert "modgate: gating https://proxy.modgate.test" in gate.output()
    assert trace_db.exists()


def test_run_refuses_an_unknown_option(tmp_path: Path) -> None:
    out = run_modgate(
        "run", "--confdir", str(tmp_path / "c"), "--set", "modgate_nope=1", cwd=tmp_path
    )
    assert out.returncode == 2
    assert "modgate_nope" in out.stderr
