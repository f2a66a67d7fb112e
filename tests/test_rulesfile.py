"""modgate.rulesfile: the checks every load of a rules file makes, and whether an edited
file may replace the rules in force (a hot reload must not weaken the policy by accident)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modgate.config import parse_config
from modgate.errors import ConfigError
from modgate.rulesfile import Keep, Replace, check, may_replace

PROXIES = "proxies:\n  - url: https://proxy.modgate.test\n"
CACHE = "cache:\n  ttl: 5m\n"
MODULES = "modules:\n  - deny: example.com/evil\n    reason: typosquat\n"
HOSTS = "hosts:\n  allow: [git.modgate.test]\n"
ROUTES = "routes:\n  - modules: corp.modgate.test\n    upstream: https://athens.modgate.test\n"
DENY_DEFAULT = "default: deny\n"
MARKER = "unrestricted: true\n"
EMPTY = "the file sets nothing but defaults"
DROPS = "it drops every host and module rule"

RELOADS = [
    # (rules in force, the edited file, None to replace or what the refusal says)
    (PROXIES + MODULES, "", EMPTY),  # an editor truncated the file to zero bytes mid-save
    (PROXIES + MODULES, "\n\n", EMPTY),
    (PROXIES + MODULES, "# rules\n", EMPTY),
    (PROXIES + CACHE, "", EMPTY),  # no policy, but the proxies it gates would change
    (PROXIES, "# nothing\n", EMPTY),
    (PROXIES + MODULES, PROXIES, DROPS),  # truncated after `proxies`
    (PROXIES + CACHE + MODULES, PROXIES + CACHE, DROPS),
    (HOSTS, CACHE, DROPS),
    (ROUTES, CACHE, DROPS),  # private modules would go to the public upstream
    (DENY_DEFAULT, CACHE, DROPS),
    (DENY_DEFAULT, "default: allow\n", EMPTY),  # allow is the default
    (MODULES + HOSTS, "mode: audit\n", DROPS),
    (PROXIES + MODULES, MARKER, None),  # said so
    (PROXIES + MODULES, PROXIES + MARKER, None),
    (PROXIES + MODULES + HOSTS, PROXIES + "unrestricted: true\n" + ROUTES, None),
    (PROXIES + MODULES, PROXIES + HOSTS, None),  # fewer rules, not none
    (PROXIES + MODULES, PROXIES + "mode: audit\n" + MODULES, None),
    (PROXIES + MODULES, PROXIES + MODULES + HOSTS, None),
    (PROXIES + CACHE, PROXIES, None),  # no rules were in force
    (PROXIES, PROXIES + MODULES, None),
    ("", "", None),
    ("", PROXIES, None),
    ("# nothing\n", "", None),
    (MARKER, "", EMPTY),  # the marker was in force; an empty file still says nothing
    (MARKER, CACHE, None),
]


@pytest.mark.parametrize(("in_force", "edited", "refused"), RELOADS)
def test_may_replace(in_force: str, edited: str, refused: str | None) -> None:
    verdict = may_replace(parse_config(in_force), parse_config(edited))
    if refused is None:
        assert verdict == Replace()
    else:
        assert isinstance(verdict, Keep)
        assert verdict.reason.startswith(refused), verdict.reason


def test_a_refusal_says_how_to_drop_the_rules_on_purpose() -> None:
    verdict = may_replace(parse_config(MODULES, "/etc/modgate/rules.yaml"), parse_config(""))
    assert isinstance(verdict, Keep)
    assert "write 'unrestricted: true' in it" in verdict.reason


def test_check_reads_the_go_sum_files_named(tmp_path: Path) -> None:
    good = tmp_path / "ci.sum"
    good.write_text("example.com/m v1.0.0 h1:AAAA\nexample.com/m v1.0.0/go.mod h1:BBBB\n")
    source = str(tmp_path / "rules.yaml")
    pins = check(parse_config("checksum:\n  go_sum: [ci.sum]\n", source))
    assert pins.get("example.com/m", "v1.0.0") == ("h1:AAAA", f"{good}:1")
    with pytest.raises(
        ConfigError, match=re.escape(f"{tmp_path / 'gone.sum'}: cannot read go.sum")
    ):
        check(parse_config("checksum:\n  go_sum: [gone.sum]\n", source))
    clash = "checksum:\n  go_sum: [ci.sum]\n  pins: ['example.com/m v1.0.0 h1:CCCC']\n"
    with pytest.raises(ConfigError, match=r"example.com/m@v1.0.0 pinned to h1:AAAA, but pin in"):
        check(parse_config(clash, source))
