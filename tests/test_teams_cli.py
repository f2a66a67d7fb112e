"""`modgate teams ...` and `modgate rules check --team`, run as a user runs them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from modgate.cli import main
from modgate.teams import Authenticator, Identity, Unauthenticated, load_teams_file

RULES = """
teams: teams.yaml
owners:
  - modules: corp.example/team-a
    teams: [team-a]
modules:
  - deny: example.com/old
    reason: "team-b moved off it"
    teams: [team-b]
"""
TEAMS = """# our teams
teams:
  team-a:
    members:
      alice: {}
  team-b: {}
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    (tmp_path / "teams.yaml").write_text(TEAMS)
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_token_lifecycle_from_the_command_line(
    rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "teams",
        "token",
        "create",
        "--rules",
        str(rules),
        "team-b",
        "ci",
        "--label",
        "nightly",
    )
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("mgt_") and "shown only now" in err
    token_id = secret[4:16]
    code, out, _ = run(capsys, "teams", "token", "ls", "--rules", str(rules), "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [token_id]
    assert secret not in (rules.parent / "teams.yaml").read_text()

    code, out, _ = run(capsys, "teams", "token", "rotate", "--rules", str(rules), token_id)
    assert code == 0
    new = out.strip()
    auth = Authenticator(load_teams_file(rules.parent / "teams.yaml"))
    assert auth.authenticate([f"Bearer {new}"]) == Identity("ci", "team-b")
    assert isinstance(auth.authenticate([f"Bearer {secret}"]), Unauthenticated)

    code, _, err = run(capsys, "teams", "token", "revoke", "--rules", str(rules), new[4:16])
    assert code == 0 and "revoked" in err
    code, out, _ = run(capsys, "teams", "ls", "--rules", str(rules))
    assert out.split("\n")[0].split() == ["TEAM", "MEMBER", "PASSWORD", "TOKENS"]
    assert "ci" in out and "alice" in out


def test_token_commands_refuse_inline_teams_and_unknown_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inline = tmp_path / "rules.yaml"
    inline.write_text("teams:\n  a: {}\n")
    code, _, err = run(capsys, "teams", "token", "create", "--rules", str(inline), "a", "x")
    assert code == 2 and "the teams are written inline" in err
    (tmp_path / "teams.yaml").write_text(TEAMS)
    inline.write_text("teams: teams.yaml\n")
    code, _, err = run(capsys, "teams", "token", "revoke", "--rules", str(inline), "0123456789ab")
    assert code == 2 and "no token '0123456789ab'" in err


def test_passwd_prints_an_argon2id_hash_that_checks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\n"))
    code, out, _ = run(capsys, "teams", "passwd", "alice")
    assert code == 0 and out.startswith('alice: {password: "$argon2id$')
    from argon2 import PasswordHasher

    assert PasswordHasher().verify(out.split('"')[1], "s3cret pass")


def test_rules_check_shows_a_teams_view(rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "rules",
        "check",
        "--rules",
        str(rules),
        "corp.example/team-a/lib@v1.0.0",
        "example.com/old@v1.0.0",
    ]
    code, out, err = run(capsys, *args, "--team", "team-a", "--json")
    assert code == 0, err
    assert [json.loads(line)["verdict"] for line in out.splitlines()] == ["allow", "allow"]
    assert "as team team-a" in err
    code, out, _ = run(capsys, *args, "--team", "team-b", "--json")
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["verdict"], r["rule"]) for r in rows] == [
        ("deny", "owners[0]"),
        ("deny", "modules[0]"),
    ]
    code, out, _ = run(capsys, *args, "--json")  # no team: as an unauthenticated client
    assert [json.loads(line)["rule"] for line in out.splitlines()] == ["owners[0]", "default"]
    code, _, err = run(capsys, *args, "--team", "team-z")
    assert code == 2 and "--team team-z: no such team" in err


def test_env_for_a_tls_endpoint_also_points_go_at_modgates_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "env", "--goproxy", "https://127.0.0.1:8081", "--confdir", str(tmp_path)
    )
    assert code == 0
    assert out.splitlines() == [
        "export GOPROXY=https://127.0.0.1:8081",
        f"export SSL_CERT_FILE={tmp_path / 'ca-bundle.pem'}",
    ]
    code, out, _ = run(
        capsys, "env", "--goproxy", "http://127.0.0.1:8081", "--confdir", str(tmp_path)
    )
    assert out.splitlines() == ["export GOPROXY=http://127.0.0.1:8081"]


def test_rules_check_team_with_a_go_mod(rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gomod = rules.parent / "go.mod"
    gomod.write_text(
        "module corp.example/team-a/app\n\ngo 1.21\n\nrequire (\n\tcorp.example/team-a/lib v1.2.0\n\texample.com/old v0.3.0\n)\n"
    )
    code, out, err = run(
        capsys, "rules", "check", "--rules", str(rules), "--team", "team-b", str(gomod)
    )
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["MODULE", "VERSION", "VERDICT", "RULE"]
    assert lines[1].split()[:4] == ["corp.example/team-a/lib", "v1.2.0", "deny", "owners[0]"]
    code, out, err = run(
        capsys, "rules", "check", "--rules", str(rules), "--team", "team-a", str(gomod)
    )
    assert code == 0 and "2 checked (as team team-a), 0 refused" in err
