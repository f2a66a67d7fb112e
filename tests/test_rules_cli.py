"""`modgate rules validate` and `modgate rules check`, as CI gates run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modgate.cli import main
from test_cli import run_modgate

RULES = """\
modules:
  - deny: example.com/evil
    name: typosquat
    reason: "not the real module: use example.com/good"
  - deny: golang.org/x/crypto
    versions: "<0.17.0"
    reason: CVE-2023-48795 (Terrapin)
  - allow: "**"
    refuse: [pseudo, retracted]
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def test_validate_ok(rules_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "validate", str(rules_file)]) == 0
    assert capsys.readouterr().out == (
        f"{rules_file}: valid: mode enforce; 3 module rules, default allow; 0 routes; any host\n"
    )


def test_validate_names_the_broken_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text(RULES.replace('"<0.17.0"', "'^v1.x'"))
    assert main(["rules", "validate", str(broken)]) == 2
    assert capsys.readouterr().err == (
        f"modgate: {broken}:6: modules[1].versions: '^v1.x' is not a version range: "
        "'^v1.x': ^ takes a version such as v1.2.3 or v1.2, not a wildcard\n"
    )


def test_validate_reads_rules_yaml_here_by_default(rules_file: Path) -> None:
    out = run_modgate("rules", "validate", cwd=rules_file.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("rules.yaml: valid: ")


def test_check_versions(rules_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["rules", "check", "--rules", str(rules_file), "golang.org/x/crypto@v0.16.0",
                   "golang.org/x/crypto@v0.17.0", "example.com/evil/x@v1.0.0",
                   "example.com/m@v1.0.1-0.20240101000000-abcdefabcdef"])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 1
    assert out.splitlines() == [
        "MODULE               VERSION                               VERDICT  RULE                    REASON",
        "golang.org/x/crypto  v0.16.0                               deny     modules[1]              CVE-2023-48795 (Terrapin)",
        "golang.org/x/crypto  v0.17.0                               allow    modules[2]",
        'example.com/evil/x   v1.0.0                                deny     modules[0] "typosquat"  not the real module: use example.com/good',
        "example.com/m        v1.0.1-0.20240101000000-abcdefabcdef  deny     modules[2]              pseudo-versions are refused",
    ]
    assert "retractions not checked offline (modules[2] refuse retracted versions" in err
    assert err.endswith("4 checked, 3 refused\n")
    assert main(["rules", "check", "--rules", str(rules_file), "golang.org/x/text@v0.14.0"]) == 0


def test_check_refuses_what_is_not_module_at_version(
    rules_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "check", "--rules", str(rules_file), "golang.org/x/text@latest"]) == 2
    assert "is not MODULE@VERSION" in capsys.readouterr().err
    assert main(["rules", "check", "--rules", str(rules_file)]) == 2


def test_audit_mode_reports_without_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = tmp_path / "rules.yaml"
    audit.write_text("mode: audit\n" + RULES)
    assert main(["rules", "check", "--rules", str(audit), "golang.org/x/crypto@v0.16.0"]) == 0
    out, err = capsys.readouterr()
    assert "audit-deny" in out
    assert err.endswith("1 checked, 0 refused, 1 would be refused (audit mode)\n")


def write_build(tmp_path: Path, n: int, bad: dict[int, str]) -> tuple[Path, Path]:
    """A go.mod with n requirements (index -> version override) and a go.sum with more."""
    requires = [(f"example.com/dep{i:02d}", bad.get(i, f"v1.{i}.0")) for i in range(n)]
    gomod = tmp_path / "go.mod"
    gomod.write_text(
        "module example.com/app\n\ngo 1.21\n\nrequire (\n"
        + "".join(
            f"\t{m} {v}{' // indirect' if i % 3 == 0 else ''}\n"
            for i, (m, v) in enumerate(requires)
        )
        + ")\n\nreplace example.com/dep01 => ../dep01\n"
    )
    gosum = tmp_path / "go.sum"
    lines = [f"{m} {v} h1:x=\n{m} {v}/go.mod h1:y=\n" for m, v in requires]
    lines.append("example.com/tool v0.9.0 h1:z=\ngolang.org/x/crypto v0.1.0/go.mod h1:w=\n")
    gosum.write_text("".join(lines))
    return gomod, gosum


def test_check_gomod_prints_one_line_per_module(tmp_path: Path, rules_file: Path) -> None:
    gomod, gosum = write_build(tmp_path, 32, {})
    out = run_modgate("rules", "check", "--rules", str(rules_file), "--gomod", str(gomod),
                      "--gosum", str(gosum), cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["MODULE", "VERSION", "VERDICT", "RULE", "FROM", "REASON"]
    assert len(lines) == 1 + 32 + 1  # each requirement, and the tool whose zip go.sum lists
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["example.com/dep00"].split()[1:5] == ["v1.0.0", "allow", "modules[2]", "go.mod"]
    assert "(indirect)" in rows["example.com/dep00"]
    assert rows["example.com/dep01"].split()[2:] == [
        "local",
        "replaced",
        "by",
        "../dep01",
        "not",
        "downloaded",
    ]
    assert rows["example.com/tool"].split()[1:5] == ["v0.9.0", "allow", "modules[2]", "go.sum"]
    assert "golang.org/x/crypto" not in rows  # only its go.mod was read: graph metadata
    assert out.stderr.endswith("33 checked, 0 refused\n")


def test_check_gomod_fails_when_anything_is_refused(
    tmp_path: Path, rules_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gomod, gosum = write_build(tmp_path, 30, {7: "v1.7.1-0.20240101000000-abcdefabcdef"})
    args = ["rules", "check", "--rules", str(rules_file), "--gomod", str(gomod), "--json"]
    assert main(args) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 30
    assert [r["module"] for r in rows if r["verdict"] == "deny"] == ["example.com/dep07"]
    assert rows[7] == {
        "module": "example.com/dep07", "version": "v1.7.1-0.20240101000000-abcdefabcdef",
        "source": "go.mod", "verdict": "deny", "rule": "modules[2]",
        "reason": "pseudo-versions are refused",
    }  # fmt: skip
    assert (
        main(["rules", "check", "--rules", str(rules_file), "--gosum", str(gosum), "x@v1.0.0"]) == 2
    )


GATED = "proxies:\n  - url: https://proxy.modgate.test\nchecksum:\n  databases: []\n"
BROKEN = [
    (GATED + "cache:\n  size_limit: 100000000000000TB\n",
     "{file}:6: cache.size_limit: '100000000000000TB' is more than a cache can hold"),
    (GATED + "  go_sum: [gone.sum]\n", "{dir}/gone.sum: cannot read go.sum file named in checksum.go_sum"),
    (GATED + "  go_sum: [bad.sum]\n", "{dir}/bad.sum:1: not a go.sum line: 'example.com/m v1.0.0'"),
    (GATED + "  pins: ['example.com/m v1.0.0 h1:AAAA']\n  go_sum: [ci.sum]\n",
     "{dir}/ci.sum:1: example.com/m@v1.0.0 pinned to h1:BBBB, but pin in {file} pins h1:AAAA"),
    ("proxies: []\n", "{file}:1: proxies: no module proxy to gate"),
    (GATED.replace("[]", "['sum.example+1234+AAAA']"),
     "{file}:4: checksum.databases[0]: 'sum.example+1234+AAAA': invalid verifier key"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_validate_refuses_what_run_refuses_with_the_same_line(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    (tmp_path / "bad.sum").write_text("example.com/m v1.0.0\n")
    (tmp_path / "ci.sum").write_text("example.com/m v1.0.0 h1:BBBB\n")
    expected = "modgate: " + message.format(file=rules, dir=tmp_path)
    assert main(["rules", "validate", str(rules)]) == 2
    said = capsys.readouterr().err
    assert said.startswith(expected), said
    run = run_modgate("run", "--rules", str(rules), "--confdir", str(tmp_path / "c"),
                      "--listen-port", "0", "--goproxy-port", "-1", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip() == said.strip()
    assert "listening" not in run.stdout + run.stderr
