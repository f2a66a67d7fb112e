"""Rules that name teams (modgate.rules with `teams:` and `owners`): each team's view, and
the spellings another team might try to see a private module by."""

from __future__ import annotations

import pytest

from modgate.config import parse_config
from modgate.errors import ConfigError
from modgate.goproxy import parse_request
from modgate.rules import Allow, Deny, Rules

TEAMS = """
teams:
  team-a: {members: {alice: {}}}
  team-b: {members: {bob: {}}}
"""

POLICY = (
    TEAMS
    + """
hosts:
  allow:
    - github.com
    - {host: git.corp.example, teams: [team-a]}
owners:
  - modules: "*.corp.example/team-a"
    teams: [team-a]
  - modules: ["*.corp.example/team-b/**"]
    teams: team-b
    answer: 404
modules:
  - deny: example.com/risky
    reason: "team-b only"
    teams: [team-a]
  - allow: "**"
"""
)


@pytest.fixture(scope="module")
def rules() -> Rules:
    return parse_config(POLICY, "rules.yaml").rules


def verdict(rules: Rules, module: str, team: str | None, version: str = "v1.0.0") -> str:
    zip_ = rules.decide(module, version, team=team)
    path = rules.decide_path(module, team)
    assert type(zip_) is type(path), (zip_, path)  # owners decide every kind alike
    match zip_:
        case Allow():
            return "allow"
        case Deny(rule, _):
            return f"{zip_.status} {rule.label}"
    raise AssertionError


@pytest.mark.parametrize(
    ("module", "team", "expected"),
    [
        ("git.corp.example/team-a/lib", "team-a", "allow"),
        ("git.corp.example/team-a/lib", "team-b", "403 owners[0]"),
        ("git.corp.example/team-a/lib", None, "403 owners[0]"),
        ("git.corp.example/team-a", "team-b", "403 owners[0]"),
        ("x.corp.example/team-a/deep/er/lib", "team-b", "403 owners[0]"),
        # The same path in other cases: go escapes them with '!' and they unescape to these.
        ("git.corp.example/Team-A/lib", "team-b", "403 owners[0]"),
        ("GIT.CORP.EXAMPLE/team-a/lib", "team-b", "403 owners[0]"),
        ("git.corp.example/TEAM-A/lib", "team-a", "allow"),
        ("git.corp.example/team-b/x", "team-a", "404 owners[1]"),
        ("git.corp.example/team-b/x", "team-b", "allow"),
        # Prefix globs match whole path elements: not a look-alike.
        ("git.corp.example/team-ab/lib", "team-b", "allow"),
        ("git.corp.example/x/team-a", "team-b", "allow"),
        # A rule naming teams applies to them alone.
        ("example.com/risky", "team-a", "403 modules[0]"),
        ("example.com/risky", "team-b", "allow"),
        ("example.com/risky", None, "allow"),
    ],
)
def test_each_team_sees_its_own_view(
    rules: Rules, module: str, team: str | None, expected: str
) -> None:
    assert verdict(rules, module, team) == expected


@pytest.mark.parametrize(
    ("path", "team", "refused"),
    [
        ("git.corp.example/team-a/lib/@v/list", "team-b", True),
        ("git.corp.example/team-a/lib/@latest", "team-b", True),
        ("git.corp.example/!team-!a/lib/@v/v1.0.0.info", "team-b", True),
        ("git.corp.example/team-a/lib/@v/v1.0.0.mod", "team-b", True),
        ("git.corp.example/team-a/lib/@v/v1.0.0.zip", "team-b", True),
        ("sumdb/sum.golang.org/lookup/git.corp.example/team-a/lib@v1.0.0", "team-b", True),
        ("sumdb/sum.golang.org/lookup/git.corp.example/!team-!a/lib@v1.0.0", "team-b", True),
        ("git.corp.example/team-a/lib/@v/v1.0.0.zip", "team-a", False),
        ("sumdb/sum.golang.org/lookup/git.corp.example/team-a/lib@v1.0.0", "team-a", False),
    ],
)
def test_every_kind_of_request_for_a_private_path_is_refused_by_path(
    rules: Rules, path: str, team: str, refused: bool
) -> None:
    req = parse_request(path, ["sum.golang.org"])
    assert req.module  # the lookup names its module: the owner check applies to it
    assert (rules.owned(req.module, team) is not None) == refused


def test_host_rules_with_teams(rules: Rules) -> None:
    assert isinstance(rules.decide_host("git.corp.example", 443, set(), "team-a"), Allow)
    assert isinstance(rules.decide_host("git.corp.example", 443, set(), "team-b"), Deny)
    assert isinstance(rules.decide_host("git.corp.example", 443, set(), None), Deny)
    assert isinstance(rules.decide_host("github.com", 443, set(), None), Allow)


def test_decisions_for_one_team_are_not_remembered_for_another(rules: Rules) -> None:
    for _ in range(2):
        assert verdict(rules, "git.corp.example/team-a/m", "team-a") == "allow"
        assert verdict(rules, "git.corp.example/team-a/m", "team-b") == "403 owners[0]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "owners:\n  - {modules: x.example, teams: [a]}\n",
            r"rules.yaml:2: owners\[0\].teams\[0\]: team 'a': no team is defined",
        ),
        (
            TEAMS + "modules:\n  - allow: x\n    teams: [team-z]\n",
            r"rules.yaml:7: modules\[0\].teams\[0\]: no team 'team-z' in teams: \(defined: team-a, team-b\)",
        ),
        (
            TEAMS + "owners:\n  - {modules: 're:x', teams: [team-a]}\n",
            r"owners\[0\].modules: owners match paths case-insensitively",
        ),
        (
            TEAMS + "owners:\n  - {modules: x, teams: [team-a], answer: 410}\n",
            r"owners\[0\].answer: 410: others get 403",
        ),
        (
            TEAMS + "hosts:\n  allow:\n    - {host: x.example}\n",
            r"hosts.allow\[0\]: missing field 'teams'",
        ),
        (
            TEAMS + "owners:\n  - {modules: x, teams: []}\n",
            r"owners\[0\].teams: expected a team name",
        ),
    ],
)
def test_errors_name_the_rule_and_the_team(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "rules.yaml")
