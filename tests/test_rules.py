"""modgate.rules: parsing the policy keys of rules.yaml, and the decisions they make."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from modgate.config import Chain, Hop, parse_config
from modgate.errors import ConfigError
from modgate.gomod import Retraction
from modgate.rules import (
    TOP_LEVEL_KEYS,
    Action,
    Allow,
    Deny,
    Mode,
    Refuse,
    Rules,
    latest_of,
    refusal_message,
)


def rules(text: str) -> Rules:
    return parse_config(text).rules


def one_rule(rule: str, default: str = "deny") -> Rules:
    """A file with one module rule (YAML mapping lines) and a default."""
    return rules(f"modules:\n  - {rule}\ndefault: {default}\n")


def verdict(r: Rules, module: str, version: str, retractions: tuple[Retraction, ...] = ()) -> str:
    match r.decide(module, version, retractions):
        case Allow(rule):
            return f"allow {rule.where}"
        case Deny(rule, _):
            return f"deny {rule.where}"
    raise AssertionError


# --- defaults -----------------------------------------------------------------------------


def test_no_policy_allows_everything() -> None:
    r = rules("cache:\n  ttl: 1m\n")
    assert r == Rules()
    assert r.mode is Mode.ENFORCE
    assert (
        verdict(r, "example.com/anything", "v0.0.0-20200101000000-abcdefabcdef") == "allow default"
    )
    assert isinstance(r.decide_path("example.com/x"), Allow)
    assert isinstance(r.decide_host("github.com", 443, set()), Allow)
    assert not r.may_deny_versions("example.com/x")
    assert r.route("example.com/x") is None


# --- path patterns, every kind ----------------------------------------------------------------

PATTERNS = [
    # (pattern as written in a rule, module path, matches)
    ("github.com/org", "github.com/org", True),
    ("github.com/org", "github.com/org/repo", True),  # a prefix of whole elements
    ("github.com/org", "github.com/org/repo/v2", True),
    ("github.com/org", "github.com/organic", False),
    ("github.com/org/", "github.com/org/repo", True),  # one trailing / ignored, as Go does
    ("*.corp.example", "git.corp.example/team/lib", True),  # GOPRIVATE-style
    ("*.corp.example", "corp.example/lib", False),
    ("*.corp.example", "a.b.corp.example/lib", True),  # * crosses dots, not slashes
    ("github.com/*/internal", "github.com/acme/internal/x", True),
    ("github.com/*/internal", "github.com/acme/public", False),
    ("github.com/acme/[a-c]*", "github.com/acme/beta", True),
    ("github.com/acme/[a-c]*", "github.com/acme/delta", False),
    ("github.com/acme/lib?", "github.com/acme/lib2/x", True),
    ("**", "golang.org/x/text", True),  # any depth
    ("golang.org/**", "golang.org/x/text", True),
    ("golang.org/**/text", "golang.org/x/text", True),
    ("golang.org/**/text", "golang.org/text", True),  # ** may be zero elements
    ("golang.org/**/text", "golang.org/x/text/v2", False),  # the whole path, not a prefix
    ("**/v2", "github.com/acme/lib/v2", True),
    ("**/v2", "github.com/acme/lib", False),
    ("re:^github\\.com/acme/.*-go$", "github.com/acme/sdk-go", True),
    ("re:^github\\.com/acme/.*-go$", "github.com/acme/sdk-go/v2", False),
    ("re:github\\.com/acme", "github.com/acme/x", False),  # must match the whole path
    ("re:(?i)GITHUB\\.com/ACME/.+", "github.com/acme/x", True),
    ("=github.com/acme/lib", "github.com/acme/lib", True),
    ("=github.com/acme/lib", "github.com/acme/lib/v2", False),
]


@pytest.mark.parametrize(("pattern", "module", "expected"), PATTERNS)
def test_path_patterns_in_rules(pattern: str, module: str, expected: bool) -> None:
    r = one_rule(f"allow: {json.dumps(pattern)}")
    assert (verdict(r, module, "v1.0.0") == "allow modules[0]") is expected
    assert isinstance(r.decide_path(module), Allow) is expected


def test_a_rule_may_list_several_patterns() -> None:
    r = one_rule("allow: [golang.org/x, '=github.com/acme/lib', 're:.*\\.corp\\.example/.*']")
    assert verdict(r, "golang.org/x/text", "v0.3.8") == "allow modules[0]"
    assert verdict(r, "github.com/acme/lib", "v1.0.0") == "allow modules[0]"
    assert verdict(r, "git.corp.example/a", "v1.0.0") == "allow modules[0]"
    assert verdict(r, "github.com/acme/other", "v1.0.0") == "deny default"


# --- version ranges, every operator -------------------------------------------------------------

RANGES = [
    # (range, version, in range)
    ("*", "v0.0.0-20200101000000-abcdefabcdef", True),
    ("*", "v3.0.0+incompatible", True),
    ("v1.2.3", "v1.2.3", True),  # an exact version
    ("v1.2.3", "v1.2.4", False),
    ("=1.2.3", "v1.2.3", True),
    ("!=1.2.3", "v1.2.3", False),
    ("!=1.2.3", "v1.2.4", True),
    ("<1.2.0", "v1.1.9", True),
    ("<1.2.0", "v1.2.0", False),
    ("<1.2.0", "v1.2.0-rc.1", False),  # a release's own pre-releases are not below it
    ("<=1.2.0", "v1.2.0", True),
    ("<=1.2.0", "v1.2.1", False),
    (">1.2.0", "v1.2.1", True),
    (">1.2.0", "v1.2.0", False),
    (">=1.2.0", "v1.2.0", True),
    (">=1.2.0", "v1.1.99", False),
    ("^1.2.3", "v1.9.0", True),
    ("^1.2.3", "v2.0.0", False),
    ("^1.2.3", "v1.2.2", False),
    ("^0.2.3", "v0.2.9", True),
    ("^0.2.3", "v0.3.0", False),
    ("~1.4.0", "v1.4.7", True),
    ("~1.4.0", "v1.5.0", False),
    ("1.x", "v1.9.9", True),  # an x-range
    ("1.x", "v2.0.0", False),
    ("1.2", "v1.2.5", True),  # a series, as go's @v1.2 query
    ("1.2", "v1.3.0", False),
    (">=1.2.0 <2.0.0", "v1.5.0", True),  # terms ANDed, by spaces ...
    (">=1.2.0, <2.0.0", "v2.0.0", False),  # ... or commas
    (">= 1.2.0 < 2.0.0", "v1.2.0", True),  # operators apart from their versions
    ("v1.2.3 || v1.4.0", "v1.4.0", True),  # an exact list, ORed
    ("v1.2.3 || v1.4.0", "v1.3.0", False),
    ("<1.0.0 || >=2.0.0 <3.0.0", "v2.5.0", True),
    (">=1.2.0 <2.0.0", "v1.2.4-0.20200101000000-abcdefabcdef", True),  # pseudo: a flag, not a range
    ("^2.0.0", "v2.1.0+incompatible", True),  # +incompatible is still major 2
]


@pytest.mark.parametrize(("spec", "version", "expected"), RANGES)
def test_version_ranges_in_rules(spec: str, version: str, expected: bool) -> None:
    r = one_rule(f"deny: example.com/lib\n    versions: {spec!r}\n    reason: r", default="allow")
    assert (verdict(r, "example.com/lib", version) == "deny modules[0]") is expected
    assert verdict(r, "example.com/other", version) == "allow default"


# --- flags --------------------------------------------------------------------------------------

PSEUDO = "v1.2.4-0.20240102030405-0123456789ab"
RETRACTIONS = (
    Retraction("v1.0.0", "v1.0.0", "published by mistake"),
    Retraction("v1.1.0", "v1.1.5"),
)
FLAGS = [
    # (refused kinds, version, refused)
    ([], PSEUDO, False),
    (["pseudo"], PSEUDO, True),
    (["pseudo"], "v1.2.3", False),
    (["pseudo"], "v0.0.0-20240102030405-0123456789ab", True),
    (["prerelease"], "v1.3.0-rc.1", True),
    (["prerelease"], PSEUDO, False),  # a pseudo-version is `pseudo`, not a tagged pre-release
    (["prerelease"], "v1.3.0", False),
    (["incompatible"], "v2.0.0+incompatible", True),
    (["incompatible"], "v2.0.0", False),
    (["retracted"], "v1.0.0", True),
    (["retracted"], "v1.1.3", True),  # inside a retracted interval
    (["retracted"], "v1.1.6", False),
    (["pseudo", "prerelease", "incompatible", "retracted"], "v1.2.0", False),
]


@pytest.mark.parametrize(("refuse", "version", "refused"), FLAGS)
def test_flags_refuse_kinds_of_version(refuse: list[str], version: str, refused: bool) -> None:
    r = one_rule(f"allow: example.com/lib\n    refuse: {refuse}", default="allow")
    got = verdict(r, "example.com/lib", version, RETRACTIONS)
    assert got == ("deny modules[0]" if refused else "allow modules[0]")


def test_refusal_reasons_say_what_and_why() -> None:
    r = one_rule("allow: example.com\n    refuse: [pseudo, retracted]\n    name: tags only\n"
                 "    reason: builds use reviewed tags")  # fmt: skip
    deny = r.decide("example.com/lib", PSEUDO)
    assert isinstance(deny, Deny)
    assert refusal_message(f"example.com/lib@{PSEUDO}", deny) == (
        f'modgate: refused example.com/lib@{PSEUDO}: rule modules[0] "tags only": '
        "pseudo-versions are refused: builds use reviewed tags"
    )
    deny = r.decide("example.com/lib", "v1.0.0", RETRACTIONS)
    assert isinstance(deny, Deny)
    assert deny.reason == (
        "retracted by its author (v1.0.0: published by mistake): builds use reviewed tags"
    )
    assert r.needs_retractions("example.com/lib")
    assert not r.needs_retractions("other.com/lib")


# --- order: first match wins, then the default --------------------------------------------------

ORDERED = """
modules:
  - allow: "*.corp.example"                    # 0: internal, any version
  - deny: github.com/evil
    reason: typosquat
  - deny: golang.org/x/crypto
    versions: "<0.17.0"
    reason: CVE-2023-48795
  - allow: golang.org/x                        # 3
    refuse: [pseudo]
  - allow: github.com/acme                     # 4
    versions: "^1.0.0"
default:
  action: deny
  reason: not on the allowlist; ask #go-platform
"""
ORDER = [
    ("git.corp.example/lib", PSEUDO, "allow modules[0]"),
    ("github.com/evil/lib", "v1.0.0", "deny modules[1]"),
    ("golang.org/x/crypto", "v0.16.0", "deny modules[2]"),
    ("golang.org/x/crypto", "v0.17.0", "allow modules[3]"),  # not in the deny range: next rule
    ("golang.org/x/net", PSEUDO, "deny modules[3]"),
    ("github.com/acme/lib", "v1.4.0", "allow modules[4]"),
    ("github.com/acme/lib", "v2.0.0", "deny default"),  # out of modules[4]'s range
    ("example.com/unknown", "v1.0.0", "deny default"),
]


@pytest.mark.parametrize(("module", "version", "expected"), ORDER)
def test_first_matching_rule_decides_then_the_default(
    module: str, version: str, expected: str
) -> None:
    assert verdict(rules(ORDERED), module, version) == expected


@pytest.mark.parametrize(
    ("module", "expected", "filtered"),
    [
        ("git.corp.example/lib", "allow modules[0]", False),
        ("github.com/evil/lib", "deny modules[1]", True),
        ("golang.org/x/crypto", "allow modules[3]", True),  # modules[2] denies some versions only
        ("github.com/acme/lib", "allow modules[4]", True),
        ("example.com/unknown", "deny default", True),
    ],
)
def test_requests_without_a_version_are_decided_by_path(
    module: str, expected: str, filtered: bool
) -> None:
    r = rules(ORDERED)
    match r.decide_path(module):
        case Allow(rule):
            assert expected == f"allow {rule.where}"
        case Deny(rule, reason):
            assert expected == f"deny {rule.where}"
            assert reason
    assert r.may_deny_versions(module) is filtered


def test_lists_are_filtered_to_allowed_versions_and_latest_follows_go() -> None:
    r = rules(ORDERED)
    listed = ["v0.15.0", "v0.16.0", "v0.17.0", "v0.18.0-rc.1", "garbage", "v0.18.0"]
    assert r.allowed_versions("golang.org/x/crypto", listed) == [
        "v0.17.0",
        "v0.18.0-rc.1",
        "v0.18.0",
    ]
    assert latest_of(["v1.0.0", "v1.2.0-rc.1", "v1.1.0"]) == "v1.1.0"  # releases first
    assert latest_of(["v1.2.0-rc.1", "v1.2.0-beta"]) == "v1.2.0-rc.1"
    assert latest_of(["v1.0.0", "v2.0.0+incompatible"]) == "v1.0.0"
    assert latest_of(["v2.0.0+incompatible", "v3.0.0+incompatible"]) == "v3.0.0+incompatible"
    assert latest_of(["junk"]) is None
    assert latest_of([]) is None


def test_mode() -> None:
    assert rules("mode: audit").mode is Mode.AUDIT
    assert rules("mode: enforce").mode is Mode.ENFORCE


# --- hosts and routes ---------------------------------------------------------------------------

HOSTS = """
hosts:
  allow:
    - github.com
    - "*.corp.example"
    - git.internal.example:8443
  reason: reach modules through modgate
"""
GATED = {("proxy.golang.example", 443)}


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("proxy.golang.example", 443, "allow proxies"),  # a gated proxy: always
        ("github.com", 443, "allow hosts.allow[0]"),
        ("GitHub.com", 80, "allow hosts.allow[0]"),  # any port when none is given
        ("git.corp.example", 443, "allow hosts.allow[1]"),
        ("corp.example", 443, "deny hosts.default"),
        ("git.internal.example", 8443, "allow hosts.allow[2]"),
        ("git.internal.example", 443, "deny hosts.default"),
        ("pastebin.example", 443, "deny hosts.default"),
    ],
)
def test_hosts(host: str, port: int, expected: str) -> None:
    match rules(HOSTS).decide_host(host, port, GATED):
        case Allow(rule):
            assert expected == f"allow {rule.where}"
        case Deny(rule, reason):
            assert expected == f"deny {rule.where}"
            assert reason == "reach modules through modgate"


def test_hosts_default_can_allow() -> None:
    r = rules("hosts:\n  default: allow\n")
    assert isinstance(r.decide_host("anything.example", 443, set()), Allow)
    r = rules("hosts: {}\n")
    deny = r.decide_host("anything.example", 443, set())
    assert isinstance(deny, Deny) and "hosts.allow" in deny.reason


def test_routes_choose_the_first_matching_chain() -> None:
    r = rules(
        """
routes:
  - modules: ["*.corp.example", "=github.com/acme/private"]
    upstream: "https://athens.corp.example|https://athens-b.corp.example"
  - modules: "**"
    upstream: https://mirror.example
"""
    )
    assert r.route("git.corp.example/lib") == Chain(
        (Hop("https://athens.corp.example", any_error=True), Hop("https://athens-b.corp.example"))
    )
    assert r.route("github.com/acme/private") == r.route("git.corp.example/x")
    assert r.route("github.com/acme/private/v2") == Chain((Hop("https://mirror.example"),))


# --- parser errors: file, line, rule, field, what was expected -------------------------------------

ERRORS = [
    ("mode: strict", "rules.yaml:1: mode: 'strict' is not a mode (expected enforce or audit)"),
    ("modules: {allow: x}", "rules.yaml:1: modules: expected a list"),
    ("modules:\n  - allow: x\n  - versions: '1.x'\n",
     "rules.yaml:3: modules[1]: a rule has exactly one of 'allow: <module path pattern>' or 'deny: <pattern>'"),
    ("modules:\n  - allow: x\n    deny: y\n", "rules.yaml:2: modules[0]: a rule has exactly one of"),
    ("modules:\n  - allow: x\n    versoins: '1.x'\n",
     "rules.yaml:3: modules[0].versoins: unknown field (expected one of: allow, deny, name, reason, refuse, teams, versions)"),
    ("modules:\n  - allow: x\n  - allow: y\n  - allow: z\n  - allow: w\n    versions: '^v1.x'\n",
     "rules.yaml:6: modules[3].versions: '^v1.x' is not a version range: '^v1.x': ^ takes a version"),
    ("modules:\n  - allow: x\n    versions: '>=1.2.0 <'\n",
     "rules.yaml:3: modules[0].versions: '>=1.2.0 <' is not a version range: '<' needs a version after it"),
    ("modules:\n  - allow: x\n    versions: !=1.2.0\n",
     "rules.yaml:3: modules[0].versions: expected a version range such as \">=1.2.0 <2.0.0\", got !=1.2.0 '' (write it in quotes"),
    ("modules:\n  - allow: x\n    versions:\n", "rules.yaml:3: modules[0].versions: expected a version range"),
    ("modules:\n  - allow: 're:('\n", "rules.yaml:2: modules[0].allow: 're:(' is not a module path pattern: bad regular expression"),
    ("modules:\n  - allow: [a, 'b/**x']\n", "rules.yaml:2: modules[0].allow[1]: 'b/**x' is not a module path pattern: '**' must be a whole path element"),
    ("modules:\n  - allow: 'a,b'\n", "rules.yaml:2: modules[0].allow: 'a,b' is not a module path pattern: ',' separates"),
    ("modules:\n  - allow: 'x/[a-'\n", "rules.yaml:2: modules[0].allow: 'x/[a-' is not a module path pattern: bad glob"),
    ("modules:\n  - allow: []\n", "rules.yaml:2: modules[0].allow: expected a module path pattern or a list of them"),
    ("modules:\n  - deny: x\n", "rules.yaml:2: modules[0]: a deny rule needs a 'reason'"),
    ("modules:\n  - deny: x\n    reason: r\n    refuse: [pseudo]\n", "rules.yaml:4: modules[0].refuse: a deny rule refuses every version it matches"),
    ("modules:\n  - allow: x\n    refuse: [pseudo, prereleases]\n",
     "rules.yaml:3: modules[0].refuse[1]: 'prereleases' is not something a rule refuses (expected one of: incompatible, prerelease, pseudo, retracted)"),
    ("modules:\n  - deny: x\n    reason: '" + "x" * 301 + "'\n", "rules.yaml:3: modules[0].reason: a reason is 301 characters; keep it under 300"),
    ("modules:\n  - deny: x\n    reason: 42\n", "rules.yaml:3: modules[0].reason: expected a reason (text)"),
    ("default: maybe", "rules.yaml:1: default: 'maybe' is not an action (expected allow or deny)"),
    ("default:\n  reason: x\n", "rules.yaml:2: default: missing field 'action'"),
    ("hosts:\n  allow: [github.com, 'https://x.example/']\n",
     "rules.yaml:2: hosts.allow[1]: 'https://x.example/' is not a host name (write github.com, not a URL)"),
    ("hosts:\n  allow: ['git.example:99999']\n", "rules.yaml:2: hosts.allow[0]: 'git.example:99999': '99999' is not a port number"),
    ("hosts:\n  default: block\n", "rules.yaml:2: hosts.default: 'block' is not an action"),
    ("routes:\n  - modules: x\n", "rules.yaml:2: routes[0]: missing field 'upstream'"),
    ("routes:\n  - modules: x\n    upstream: 'https://a.example,direct'\n",
     "rules.yaml:3: routes[0].upstream: 'direct' is not supported as an upstream"),
    ("routes:\n  - modules: x\n    upstream: ftp://m.example\n", "rules.yaml:3: routes[0].upstream: 'ftp://m.example' is not an http(s) URL"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_parser_errors_name_line_rule_field_and_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_config(text)


def test_unquoted_numbers_keep_what_was_written() -> None:
    # YAML would read 1.10 as the float 1.1; a range means what the file says.
    r = one_rule("allow: x\n    versions: 1.10", default="deny")
    assert verdict(r, "x", "v1.10.3") == "allow modules[0]"
    assert verdict(r, "x", "v1.1.0") == "deny default"


def test_rule_values() -> None:
    rule = rules(ORDERED).modules[3]
    assert rule.where == "modules[3]"
    assert rule.action is Action.ALLOW
    assert rule.refuse == frozenset({Refuse.PSEUDO})
    assert [p.text for p in rule.patterns] == ["golang.org/x"]


# --- the documented example ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def commented_examples() -> str:
    """The commented-out policy examples of the repo-root rules.yaml, uncommented."""
    out, inside = [], False
    for line in (ROOT / "rules.yaml").read_text().splitlines():
        if re.match(r"# (mode|hosts|routes|modules|default):", line):
            inside = True
        elif not (inside and line.startswith("#   ")):
            inside = False
        if inside:
            out.append(line[2:])
    return "\n".join(out) + "\n"


def test_the_examples_in_rules_yaml_are_valid_and_mean_what_they_say() -> None:
    assert rules((ROOT / "rules.yaml").read_text()) == Rules()  # as shipped: allow everything
    r = rules(commented_examples())
    assert r.mode is Mode.AUDIT
    assert r.hosts is not None and len(r.hosts.allow) == 3
    assert r.route("git.corp.example/team/lib") is not None
    assert verdict(r, "git.corp.example/team/lib", PSEUDO) == "allow modules[0]"
    assert verdict(r, "github.com/acme-crop/lib", "v1.0.0") == "deny modules[1]"
    assert verdict(r, "golang.org/x/crypto", "v0.16.0") == "deny modules[2]"
    assert verdict(r, "golang.org/x/crypto", "v0.17.0") == "allow modules[3]"
    assert verdict(r, "github.com/spf13/cobra", "v1.8.0") == "allow modules[4]"
    assert verdict(r, "github.com/spf13/cobra", "v1.9.0-rc.1") == "deny modules[4]"
    assert verdict(r, "github.com/some/lib", "v0.3.0") == "deny default"


def test_the_json_schema_for_editors_agrees_with_the_parser() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "rules.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == {
        "proxies",
        "cache",
        "checksum",
        "teams",
        "store",
        "coordination",
        *TOP_LEVEL_KEYS,
    }
    validator = jsonschema.Draft202012Validator(schema)
    for text in ((ROOT / "rules.yaml").read_text(), commented_examples(), ORDERED, HOSTS):
        validator.validate(yaml.safe_load(text))
    for bad in (
        "mode: strict",
        "modules:\n  - deny: x\n",
        "modules:\n  - allow: x\n    refuse: [pre]\n",
    ):
        assert not validator.is_valid(yaml.safe_load(bad)), bad


# --- unrestricted: no host or module rule, on purpose --------------------------------------------


def test_unrestricted_says_there_are_no_rules_on_purpose() -> None:
    assert rules("unrestricted: true\n").unrestricted
    assert rules("unrestricted: true\nmode: audit\n").unrestricted
    assert not rules("unrestricted: false\n").unrestricted
    assert not rules("").unrestricted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unrestricted: yes please\n", "rules.yaml:1: unrestricted: 'yes please' is not true or false"),
        ("unrestricted: true\nmodules:\n  - allow: x\n",
         "rules.yaml:1: unrestricted: true says there are no host or module rules, but the file "
         "has modules: remove one or the other"),
        ("unrestricted: true\nhosts:\n  allow: []\n", "rules.yaml:1: unrestricted: true says there "
         "are no host or module rules, but the file has hosts"),
        ("default: deny\nunrestricted: true\n", "rules.yaml:2: unrestricted: true says there are "
         "no host or module rules, but the file has default: deny"),
    ],
)  # fmt: skip
def test_unrestricted_contradicted_by_rules_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_config(text)
