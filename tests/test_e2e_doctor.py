"""`modgate doctor` against a running modgate and real misconfigured clients: each finding
comes from the environment a user would have, and the live probe goes the way go would."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from world.disks import tiny_disk
from world.gate import Gate, modgate_command
from world.gocmd import go_env, run_go
from world.modules import World, graph_roots
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
WORLD_MODULES = 6


@pytest.fixture(scope="module")
def db(world: World) -> Iterator[TestSumdb]:
    with TestSumdb().add_world(world) as db:
        yield db


@pytest.fixture(scope="module")
def gate(world: World, db: TestSumdb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    home = tmp_path_factory.mktemp("doctor")
    with Upstream(world) as upstream:
        rules = (
            f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
            f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
        )
        with Gate(home, rules) as gate:
            yield gate


def doctor(gate: Gate, env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    port = str(urlsplit(gate.proxy_url).port)
    endpoint = str(urlsplit(gate.goproxy_url).port)
    done = subprocess.run(
        modgate_command("doctor", "--json", "--listen-port", port, "--goproxy-port", endpoint,
                        "--confdir", str(gate.confdir), "--cache-dir", str(gate.cache_dir),
                        "--rules", str(gate.rules), "--probe", "example.com/doctor", *args),
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {f["check"]: f["status"] for f in report["findings"]}


def finding(report: dict[str, Any], check: str) -> dict[str, Any]:
    return next(f for f in report["findings"] if f["check"] == check)


def client(db: TestSumdb, tmp_path: Path, goproxy: str, **extra: str) -> dict[str, str]:
    """go with its checksum checks on, against the test database modgate gates."""
    return go_env(tmp_path, goproxy, **{"GOSUMDB": db.verifier_key, **extra})


def test_a_client_set_up_by_modgate_env_passes_and_its_probe_is_answered_by_modgate(
    gate: Gate, db: TestSumdb, world: World, tmp_path: Path
) -> None:
    env = gate.client_env(client(db, tmp_path, f"https://{HOST}"))
    rc, report = doctor(gate, env)
    assert rc == 0, report
    assert report["route"] == "proxy"
    probe = finding(report, "probe")
    assert probe["status"] == "ok"
    assert "answered by modgate" in probe["message"]
    assert "through the HTTPS proxy" in probe["message"]
    assert statuses(report)["client-sumdb"] == "ok"
    # And go agrees: the same settings download through modgate.
    run_go(["mod", "download", "-json", f"{graph_roots(world)[0]}@latest"], env=env, cwd=tmp_path)


def test_a_checksum_database_go_cannot_reach_is_found_before_go_fails_on_it(
    gate: Gate, db: TestSumdb, world: World, tmp_path: Path
) -> None:
    other = TestSumdb("elsewhere.modgate.test")  # a database modgate does not gate
    env = gate.client_env(client(db, tmp_path, f"https://{HOST}", GOSUMDB=other.verifier_key))
    rc, report = doctor(gate, env)
    assert rc == 1
    found = finding(report, "client-sumdb")
    assert found["status"] == "fail" and "elsewhere.modgate.test" in found["message"]
    assert "checksum.databases" in found["fix"]
    done = run_go(["mod", "download", "-json", f"{graph_roots(world)[0]}@latest"], env=env,
                  cwd=tmp_path, check=False)  # fmt: skip
    assert done.returncode != 0 and "verifying" in done.stdout


def test_the_endpoint_passes_and_needs_no_ca(gate: Gate, db: TestSumdb, tmp_path: Path) -> None:
    rc, report = doctor(gate, client(db, tmp_path, gate.goproxy_url))
    assert rc == 0, report
    assert report["route"] == "endpoint"
    assert "ca-bundle" not in statuses(report)
    assert "at the GOPROXY endpoint" in finding(report, "probe")["message"]


def test_no_settings_at_all_is_a_failure_with_the_fix(
    gate: Gate, db: TestSumdb, tmp_path: Path
) -> None:
    rc, report = doctor(gate, client(db, tmp_path, f"https://{HOST}"))
    assert rc == 1
    route = finding(report, "route")
    assert route["status"] == "fail" and "HTTPS_PROXY is not set" in route["message"]
    assert "modgate env" in route["fix"]
    assert "probe" not in statuses(report)


def test_no_proxy_that_excludes_the_gated_host(gate: Gate, db: TestSumdb, tmp_path: Path) -> None:
    env = {**gate.client_env(client(db, tmp_path, f"https://{HOST}")), "no_proxy": "modgate.test"}
    rc, report = doctor(gate, env)
    assert rc == 1
    assert statuses(report)["no-proxy"] == "fail"
    assert report["route"] == "none"


def test_a_bundle_without_modgates_ca_fails_and_so_does_the_probe(
    gate: Gate, db: TestSumdb, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(_cert_pem(days=30))
    env = {**gate.client_env(client(db, tmp_path, f"https://{HOST}")), "SSL_CERT_FILE": str(other)}
    rc, report = doctor(gate, env)
    assert rc == 1
    assert statuses(report)["ca-bundle"] == "fail"
    probe = finding(report, "probe")
    assert probe["status"] == "fail" and "CERTIFICATE_VERIFY_FAILED" in probe["message"]


def test_modgates_ca_alone_where_go_finds_no_other(
    gate: Gate, db: TestSumdb, tmp_path: Path
) -> None:
    env = {**gate.client_env(client(db, tmp_path, f"https://{HOST}")),
           "SSL_CERT_FILE": str(gate.confdir / "mitmproxy-ca-cert.pem"),
           "SSL_CERT_DIR": str(tmp_path / "no-such-dir")}  # fmt: skip
    rc, report = doctor(gate, env)
    assert rc == 1
    assert statuses(report)["ca-bundle"] == "warn"
    assert statuses(report)["probe"] == "ok"  # modgate's own answers still pass


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ({"GOSUMDB": "off"}, "gosumdb"),
        ({"GOINSECURE": "*.corp.example"}, "goinsecure"),
        ({"GOPROXY": "direct"}, "route"),
        ({"GOPROXY": "off"}, "route"),
    ],
)  # fmt: skip
def test_settings_that_weaken_or_bypass_the_gate(
    gate: Gate, db: TestSumdb, tmp_path: Path, extra: dict[str, str], check: str
) -> None:
    rc, report = doctor(gate, {**client(db, tmp_path, gate.goproxy_url), **extra})
    assert rc == 1
    assert statuses(report)[check] in ("warn", "fail")
    assert finding(report, check)["fix"]


def test_private_modules_are_noted_not_failed(gate: Gate, db: TestSumdb, tmp_path: Path) -> None:
    rc, report = doctor(gate, client(db, tmp_path, gate.goproxy_url, GOPRIVATE="corp.example"))
    assert rc == 0, report
    assert statuses(report)["gonoproxy"] == "note"
    assert statuses(report)["gonosumdb"] == "note"


def test_a_modgate_that_is_not_running(gate: Gate, db: TestSumdb, tmp_path: Path) -> None:
    env = client(db, tmp_path, "http://127.0.0.1:9")
    done = subprocess.run(
        modgate_command("doctor", "--json", "--listen-port", "9", "--goproxy-port", "9",
                        "--confdir", str(gate.confdir), "--rules", str(gate.rules)),
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 1
    assert statuses(report)["proxy-listening"] == "fail"
    assert "is modgate running" in finding(report, "proxy-listening")["message"]


def test_broken_rules_and_an_unwritable_cache(gate: Gate, db: TestSumdb, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("proxies: [\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, report = doctor(gate, client(db, tmp_path, gate.goproxy_url), "--rules", str(rules),
                        "--cache-dir", str(blocker / "cache"))  # fmt: skip
    assert rc == 1
    rules_finding = finding(report, "rules")
    assert rules_finding["status"] == "fail" and str(rules) in rules_finding["message"]
    assert statuses(report)["cache-dir"] == "fail"


def test_an_expiring_and_an_expired_ca(gate: Gate, db: TestSumdb, tmp_path: Path) -> None:
    for days, status in ((10, "warn"), (-1, "fail")):
        confdir = tmp_path / f"conf{days}"
        confdir.mkdir()
        (confdir / "mitmproxy-ca-cert.pem").write_bytes(_cert_pem(days))
        rc, report = doctor(gate, client(db, tmp_path, gate.goproxy_url), "--confdir", str(confdir))
        assert rc == 1
        assert statuses(report)["ca"] == status


def test_the_text_report_names_the_problem_and_its_fix(
    gate: Gate, db: TestSumdb, tmp_path: Path
) -> None:
    env = {**client(db, tmp_path, gate.goproxy_url), "GOSUMDB": "off"}
    port, endpoint = urlsplit(gate.proxy_url).port, urlsplit(gate.goproxy_url).port
    done = subprocess.run(
        modgate_command("doctor", "--listen-port", str(port), "--goproxy-port", str(endpoint),
                        "--confdir", str(gate.confdir), "--rules", str(gate.rules),
                        "--cache-dir", str(gate.cache_dir), "--probe", "example.com/doctor"),
        env={**env, "PATH": os.environ["PATH"] + os.pathsep + env["PATH"]},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "at its GOPROXY endpoint; 1 problem" in done.stdout
    assert "WARN  gosumdb" in done.stdout
    assert "fix: unset GOSUMDB" in done.stdout


def _cert_pem(days: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


def test_an_unreachable_upstream_and_database_and_a_small_disk_are_each_named(
    gate: Gate, db: TestSumdb, tmp_path: Path
) -> None:
    # The server side as an operator finds it on a bad day: the upstream and the
    # checksum database gone, and the cache on a disk with little room left.
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"proxies:\n  - url: https://{HOST}\n    upstream: {dead}/up\n"
        f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {dead}/db\n"
    )
    with tiny_disk(tmp_path / "disk", "64m") as disk:
        rc, report = doctor(gate, gate.client_env(client(db, tmp_path, f"https://{HOST}")),
                            "--rules", str(rules), "--cache-dir", str(disk / "cache"))  # fmt: skip
    assert rc == 1
    found = {f["check"]: f for f in report["findings"]}
    assert found["upstream"]["status"] == "warn"
    assert f"upstream {dead}/up unreachable" in found["upstream"]["message"]
    assert found["sumdb"]["status"] == "warn" and f"{dead}/db" in found["sumdb"]["message"]
    assert found["cache-dir"]["status"] == "warn" and "MiB free" in found["cache-dir"]["message"]
    assert all(found[c]["fix"] for c in ("upstream", "sumdb", "cache-dir"))
