"""modgate.config: rules.yaml parsing, values, and error messages that name the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from modgate.config import (
    CacheSettings,
    Chain,
    Hop,
    load_config,
    parse_chain,
    parse_config,
    parse_duration,
    parse_size,
    proxies_from_goproxy,
)
from modgate.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_example_rules_file_at_repo_root_is_valid() -> None:
    config = load_config(ROOT / "rules.yaml")
    assert config.source.endswith("rules.yaml")


def test_empty_file_means_defaults() -> None:
    config = parse_config("")
    assert config.proxies is None
    assert config.cache == CacheSettings()


def test_full_file() -> None:
    config = parse_config(
        """
proxies:
  - url: https://goproxy.corp.example/go/
    upstream: "https://a.example, https://b.example/mirror|https://c.example"
  - url: https://proxy.modgate.test
cache:
  size_limit: 2GiB
  ttl: 5m
  negative_ttl: 30s
  readahead: false
  readahead_zips: false
"""
    )
    assert config.proxies is not None
    mirror, plain = config.proxies
    assert mirror.url == "https://goproxy.corp.example/go"
    assert (mirror.host, mirror.port, mirror.base_path) == ("goproxy.corp.example", 443, "/go")
    assert mirror.chain == Chain(
        (
            Hop("https://a.example"),
            Hop("https://b.example/mirror", any_error=True),
            Hop("https://c.example"),
        )
    )
    assert str(mirror.chain) == "https://a.example,https://b.example/mirror|https://c.example"
    assert plain.chain == Chain((Hop("https://proxy.modgate.test"),))  # default: the proxy itself
    assert config.cache == CacheSettings(
        size_limit=2 << 30, ttl=300, negative_ttl=30, readahead=False, readahead_zips=False
    )


@pytest.mark.parametrize(
    ("host", "port", "path", "relative"),
    [
        ("goproxy.corp.example", 443, "/go/example.com/m/@v/list", "example.com/m/@v/list"),
        ("GOPROXY.corp.example", 443, "/go/example.com/m/@v/list", "example.com/m/@v/list"),
        ("goproxy.corp.example", 443, "/gox/example.com/m/@v/list", None),
        ("goproxy.corp.example", 443, "/example.com/m/@v/list", None),
        ("goproxy.corp.example", 8443, "/go/example.com/m/@v/list", None),
        ("other.example", 443, "/go/example.com/m/@v/list", None),
    ],
)
def test_proxy_relative(host: str, port: int, path: str, relative: str | None) -> None:
    config = parse_config("proxies:\n  - url: https://goproxy.corp.example/go\n")
    assert config.proxies is not None
    assert config.proxies[0].relative(host, port, path) == relative


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("proxies: [\n", r"rules.yaml:2:1: not valid YAML"),
        ("proxys: []\n", r"rules.yaml:1: proxys: unknown field \(expected one of: [a-z_, ]*\bproxies\b"),
        ("proxies: https://x.example\n", r"rules.yaml:1: proxies: expected a list"),
        ("proxies:\n  - upstream: https://x.example\n", r"rules.yaml:2: proxies\[0\]: missing field 'url'"),
        ("proxies:\n  - url: ftp://x.example\n", r"rules.yaml:2: proxies\[0\].url: 'ftp://x.example' is not an http\(s\) URL"),
        ("proxies:\n  - url: https://x.example\n    upstream: https://a.example,direct\n",
         r"rules.yaml:3: proxies\[0\].upstream: 'direct' is not supported as an upstream.*client's GOPROXY"),
        ("proxies:\n  - url: https://x.example\n    upstream: https://a.example,,https://b.example\n",
         r"rules.yaml:3: proxies\[0\].upstream: '' is not an http\(s\) URL"),
        ("proxies:\n  - url: https://x.example\n  - url: https://X.example/\n",
         r"rules.yaml:3: proxies\[1\]: https://X.example is listed twice \(also proxies\[0\]\)"),
        ("cache:\n  ttl: soon\n", r"rules.yaml:2: cache.ttl: 'soon' is not a duration"),
        ("cache:\n  size_limit: lots\n", r"rules.yaml:2: cache.size_limit: 'lots' is not a size"),
        ("cache:\n  size_limit: [1]\n", r"rules.yaml:2: cache.size_limit: expected a single value"),
        ("cache:\n  readahead: sometimes\n", r"rules.yaml:2: cache.readahead: 'sometimes' is not true or false"),
        ("cache:\n  readahead_zips: 1\n", r"rules.yaml:2: cache.readahead_zips: 1 is not true or false"),
        ("- 1\n", r"rules.yaml:1: \(top level\): expected a mapping"),
        # Found by scripts/fuzz: urlsplit checks a port only when asked (ValueError escaped).
        ("proxies:\n  - url: https://p:x//1\n", r"rules.yaml:2: proxies\[0\].url: 'https://p:x//1': the port is not a number from 0 to 65535"),
        ("proxies:\n  - url: https://p\n    upstream: http://u:99999\n", r"rules.yaml:3: proxies\[0\].upstream: 'http://u:99999': the port"),
        ("[x]: 1\n", r"rules.yaml:1: \(top level\): a key must be a plain name"),
        ("\x00", r"rules.yaml: not valid YAML: unacceptable character #x0000"),
        ("[" * 2000, r"rules.yaml: lists or mappings nested too deeply to read"),
        ("cache:\n  size_limit: !x 10GB\n", r"rules.yaml:2: cache.size_limit: cannot read this value: could not determine a constructor for the tag '!x'"),
        ("cache:\n  ttl: !!int 10m\n", r"rules.yaml:2: cache.ttl: cannot read this value: invalid literal"),
        ("cache:\n  ttl: !!timestamp 2020-13-45\n", r"rules.yaml:2: cache.ttl: cannot read this value"),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_load_config_reports_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read rules file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"proxies: \xff\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8"):
        load_config(bad)


def test_parse_chain_separators() -> None:
    assert parse_chain("https://a.example|https://b.example") == Chain(
        (Hop("https://a.example", any_error=True), Hop("https://b.example"))
    )
    with pytest.raises(ValueError, match="not an upstream list"):
        parse_chain("  ")


def test_proxies_from_goproxy_skips_direct_and_off() -> None:
    proxies = proxies_from_goproxy("https://a.example,https://b.example/go|direct,off")
    assert [p.url for p in proxies] == ["https://a.example", "https://b.example/go"]
    assert all(p.chain == Chain((Hop(p.url),)) for p in proxies)
    assert proxies_from_goproxy("direct") == ()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), (1.5, 1.5), ("30s", 30.0), ("10m", 600.0), ("1h30m", 5400.0), ("7d", 604800.0),
     ("250ms", 0.25)],
)  # fmt: skip
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "10", "10 m", "m", "-5s", True, -1])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [(1024, 1024), ("500MB", 500_000_000), ("20GiB", 20 << 30), ("1.5GiB", int(1.5 * (1 << 30))),
     ("64k", 64_000)],
)  # fmt: skip
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "lots", "5 parsecs", "-1GB", True])
def test_parse_size_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [("9223372036854775807", 2**63 - 1), ("8EiB", None), ("9223372036854775807B", 2**63 - 1)],
)
def test_parse_size_takes_up_to_what_sqlite_stores(value: str, size: int | None) -> None:
    """diskcache keeps size_limit in an SQLite INTEGER: at most 2**63-1, exactly."""
    if size is None:
        with pytest.raises(ValueError, match="is more than a cache can hold"):
            parse_size(value)
    else:
        assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", ["100000000000000TB", "9223372036854775808", "9" * 400, "9" * 400 + ".5TiB"]
)
def test_parse_size_refuses_what_overflows_the_cache_database(value: str) -> None:
    with pytest.raises(ValueError, match=r"is more than a cache can hold \(at most 8EiB - 1 byte"):
        parse_size(value)


def test_an_overflowing_size_limit_is_a_config_error_naming_the_place() -> None:
    with pytest.raises(
        ConfigError,
        match=r"rules.yaml:2: cache.size_limit: '100000000000000TB' is more than a cache can hold",
    ):
        parse_config("cache:\n  size_limit: 100000000000000TB\n")


@pytest.mark.parametrize("value", ["9" * 400 + "s", ".inf"])
def test_parse_duration_refuses_infinity(value: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(float("inf") if value == ".inf" else value)
    with pytest.raises(ConfigError, match=r"rules.yaml:2: cache.ttl: .* is not a duration"):
        parse_config(f"cache:\n  ttl: {value}\n")


def test_an_empty_proxies_list_is_refused_where_it_stands() -> None:
    with pytest.raises(ConfigError, match=r"rules.yaml:1: proxies: no module proxy to gate"):
        parse_config("proxies: []\n")
