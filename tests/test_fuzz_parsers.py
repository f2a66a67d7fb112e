"""Every parser that reads upstream, client or file input, fed what hypothesis makes:
the only exceptions that may escape are modgate's own (`ModgateError`; `ConfigError`
for rules.yaml). The targets are in tests/fuzz_targets.py, shared with `scripts/fuzz`
(the longer, coverage-guided run); the example budget is the `suite` hypothesis profile
(tests/conftest.py), `HYPOTHESIS_PROFILE=fuzz` for many more.

Each target gets raw bytes, mutations of valid seeds, and inputs built to get past the
first checks (structured zips, go.mod directives, nested JSON, YAML documents)."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

import fuzz_targets
from fuzz_targets import MODULE, PREFIX, SEP, TARGETS, check, j, seeds
from modgate import patterns, semver, versionspec
from modgate.errors import ModgateError

SEEDS = seeds()


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A seed of the target with a few bytes replaced, inserted, deleted or repeated."""
    data = bytearray(draw(st.sampled_from(SEEDS[name])))
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["set", "insert", "delete", "repeat"])):
            case "set" if at < len(data):
                data[at] = draw(st.integers(0, 255))
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            case "delete":
                del data[at : at + draw(st.integers(1, 16))]
            case "repeat":
                data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(1, 50))
            case _:
                pass
    return bytes(data)


def inputs(name: str) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), mutated(name))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_reach_past_the_first_checks(name: str) -> None:
    """The seeds are valid input for at least one call of each target: mutation starts deep."""
    for seed in SEEDS[name]:
        check(TARGETS[name], seed)


# --- one property per target: raw bytes and mutated seeds ------------------------------


@given(inputs("request"))
def test_fuzz_request(data: bytes) -> None:
    check(fuzz_targets.request, data)


@given(inputs("versions"))
def test_fuzz_versions(data: bytes) -> None:
    check(fuzz_targets.versions, data)


@given(inputs("version_range"))
def test_fuzz_version_range(data: bytes) -> None:
    check(fuzz_targets.version_range, data)


@given(inputs("pattern"))
def test_fuzz_pattern(data: bytes) -> None:
    check(fuzz_targets.pattern, data)


@given(inputs("go_mod"))
@example(b'module m\n"//"\nretract v1.0.0\n').via("issue 12: a line go skips")
def test_fuzz_go_mod(data: bytes) -> None:
    check(fuzz_targets.go_mod, data)


@given(inputs("go_sum"))
def test_fuzz_go_sum(data: bytes) -> None:
    check(fuzz_targets.go_sum, data)


@given(inputs("zip"))
def test_fuzz_zip_bytes(data: bytes) -> None:
    check(fuzz_targets.zip_file, data)


@given(inputs("info"))
@example(b"[" * 100_000).via("issue 12: nesting deeper than Python's stack")
def test_fuzz_info(data: bytes) -> None:
    check(fuzz_targets.info, data)


@given(inputs("note"))
def test_fuzz_note(data: bytes) -> None:
    check(fuzz_targets.signed_note, data)


@given(inputs("tree_record"))
def test_fuzz_tree_and_record(data: bytes) -> None:
    check(fuzz_targets.tree_and_record, data)


@given(inputs("tile"))
def test_fuzz_tile(data: bytes) -> None:
    check(fuzz_targets.tile, data)


@given(inputs("lookup"))
def test_fuzz_lookup(data: bytes) -> None:
    check(fuzz_targets.lookup, data)


@given(inputs("rules_yaml"))
@example(b"[" * 2000 + b"]" * 2000).via("nesting deeper than Python's stack")
@example(b"proxies:\n  - url: https://prut:eslp://1\n").via("scripts/fuzz: unreadable port")
@example(b"cache:\n  size_limit: !::10GB\n").via("scripts/fuzz: a tag safe_load does not know")
def test_fuzz_rules_yaml_text(data: bytes) -> None:
    check(fuzz_targets.rules_yaml, data)


# --- structured inputs: past the first checks ------------------------------------------

_PATH_CHARS = st.sampled_from(
    list("abcAB09.-_~!/@+ %$#:\\ä\u212a\x00\n\udcff") + ["//", "..", "@v", "/@v/"]
)
_VERSION_PARTS = st.sampled_from(
    ["v", "0", "1", "2", "01", ".", "-", "+", "pre", "rc.1", "incompatible", "0.20200101000000-",
     "20200101000000", "abcdefabcdef", "x", "*", "99999999999999999999", "\u0661"]
)  # fmt: skip


@given(st.lists(_PATH_CHARS, max_size=30).map("".join), st.lists(_VERSION_PARTS, max_size=12).map("".join),
       st.sampled_from(["info", "mod", "zip", "list", "latest", "lookup", "tile"]))  # fmt: skip
def test_fuzz_request_paths_built_from_protocol_pieces(
    module: str, version: str, kind: str
) -> None:
    path = {
        "list": f"{module}/@v/list", "latest": f"{module}/@latest",
        "lookup": f"sumdb/sum.fuzz.test/lookup/{module}@{version}",
        "tile": f"sumdb/sum.fuzz.test/tile/{version}/{module}",
    }.get(kind, f"{module}/@v/{version}.{kind}")  # fmt: skip
    check(fuzz_targets.request, path.encode("utf-8", "surrogatepass"))


@given(
    st.lists(_VERSION_PARTS, max_size=12).map("".join),
    st.lists(_VERSION_PARTS, max_size=12).map("".join),
)
def test_fuzz_versions_built_from_semver_pieces(v: str, w: str) -> None:
    check(fuzz_targets.versions, j(v.encode(), w.encode()))


_RANGE_PARTS = st.sampled_from(
    [">=", "<=", ">", "<", "=", "!=", "^", "~", " ", ",", "||", "v1", "1.2", ".x", ".*", "1.2.3",
     "-rc.1", "+b", "0", "99999999999999999999", "*", "X"]
)  # fmt: skip


@given(
    st.lists(_RANGE_PARTS, max_size=10).map("".join),
    st.lists(_VERSION_PARTS, max_size=10).map("".join),
)
def test_fuzz_version_ranges_built_from_operators(spec: str, version: str) -> None:
    check(fuzz_targets.version_range, j(spec.encode(), version.encode()))


_GLOB_PARTS = st.sampled_from(
    ["*", "**", "?", "[", "]", "[^", "a-z", "\\", "/", ",", "=", "re:", "a", "é", ".", "\xff"]
)


@given(
    st.lists(_GLOB_PARTS, max_size=10).map("".join), st.lists(_PATH_CHARS, max_size=12).map("".join)
)
@example("[\\", "a").via("a class cut off after its escape")
def test_fuzz_patterns_built_from_glob_pieces(glob: str, path: str) -> None:
    check(fuzz_targets.pattern, j(glob.encode(), path.encode("utf-8", "surrogatepass")))


_GOMOD_TOKENS = st.sampled_from(
    ["module", "require", "replace", "retract", "exclude", "go", "(", ")", "[", "]", ",", "=>",
     "//", "/*", '"', '"//"', "`", "\\", "v1.0.0", "v1.2.3-pre", "example.com/m", "indirect",
     " ", "\t", "\n", "\r\n", "\x00", "\u2028", "\x0c", "\ufeff"]
)  # fmt: skip


@given(st.lists(_GOMOD_TOKENS, max_size=40))
def test_fuzz_go_mod_built_from_tokens(tokens: list[str]) -> None:
    check(fuzz_targets.go_mod, "".join(tokens).encode())


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["Version", "Time", "Origin", ""]), inner, max_size=3),
    max_leaves=20,
)  # fmt: skip


@given(_JSON, st.integers(0, 3000))
def test_fuzz_info_built_as_json(value: Any, depth: int) -> None:
    body = json.dumps({"Version": value} if depth % 2 else value)
    check(fuzz_targets.info, ("[" * depth + body + "]" * depth).encode())


_MEMBER_NAMES = st.lists(
    st.sampled_from(["a", "A", "go.mod", "GO.MOD", "LICENSE", "..", ".", "", "d", "\u212a", "con", "x.", "ä", "\udcff"]),
    min_size=0, max_size=6,
).map("/".join)  # fmt: skip


@st.composite
def module_zips(draw: st.DrawFn) -> bytes:
    """A zip with module-like members, then a few header fields an upstream controls."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # duplicate names are part of the attack
        for _ in range(draw(st.integers(0, 5))):
            name = draw(
                st.sampled_from([PREFIX, "", f"{MODULE}@v1.0.1/", PREFIX + "d/" * 300])
            ) + draw(_MEMBER_NAMES)
            info = zipfile.ZipInfo(name.encode("utf-8", "surrogateescape").decode("cp437"))
            info.compress_type = draw(
                st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
            )
            archive.writestr(info, draw(st.binary(max_size=64)))
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 3))):
        header = data.find(b"PK\x01\x02", draw(st.integers(0, max(0, len(data) - 1))))
        if header < 0:
            break
        field = draw(
            st.sampled_from([6, 8, 10, 16, 20, 24, 38])
        )  # version, flags, method, CRC, sizes, attrs
        struct.pack_into("<H", data, header + field, draw(st.integers(0, 0xFFFF)))
    return bytes(data)


@given(module_zips())
def test_fuzz_zip_built_from_members(data: bytes) -> None:
    check(fuzz_targets.zip_file, data)


_YAML_KEYS = st.sampled_from(
    ["proxies", "url", "upstream", "cache", "size_limit", "ttl", "negative_ttl", "checksum", "private",
     "databases", "key", "hosts", "allow", "deny", "modules", "versions", "refuse", "reason", "name",
     "mode", "retracted", "routes", "x"]
)  # fmt: skip
_YAML_LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.sampled_from(["**", "https://proxy.fuzz.test", "http://127.0.0.1:9", "10GB", "-1", "1e400",
                       ">=1.2", "re:(", "[", "off", "sum.golang.google.cn", "1000000000000000TB", "5m"])
    | st.text(max_size=10)
)  # fmt: skip
_YAML = st.recursive(
    _YAML_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_YAML_KEYS, inner, max_size=4),
    max_leaves=25,
)


@given(st.dictionaries(_YAML_KEYS, _YAML, max_size=5))
def test_fuzz_rules_yaml_built_from_structures(document: dict[str, Any]) -> None:
    check(fuzz_targets.rules_yaml, yaml.safe_dump(document).encode())


_YAML_SYNTAX = st.sampled_from(
    [*":-?[]{}&*!|>'\"%@`#,\n\t ab0", "\x00", "\x85", "\ufeff", "- ", ": ", "? "]
)


@given(st.lists(_YAML_SYNTAX, max_size=60).map("".join))
@example("[x]: 1\n").via("a mapping key that is a sequence")
@example("\x00").via("a character YAML forbids")
def test_fuzz_rules_yaml_built_from_syntax(document: str) -> None:
    check(fuzz_targets.rules_yaml, document.encode())


def test_separator_splits_multi_part_inputs() -> None:
    assert fuzz_targets.split(j(b"a", b"b\0c"), 3) == [b"a", b"b\0c", b""]
    assert SEP not in b"".join(SEEDS["tile"][0].split(SEP))


@pytest.mark.parametrize(
    ("parse", "text", "error"),
    [(patterns.compile_pattern, "a,b", patterns.PatternError),
     (lambda text: patterns.path_match(text, "x"), "[", patterns.PatternError),
     (versionspec.parse_spec, "^1.x", versionspec.VersionRangeError),
     (lambda text: versionspec.parse_spec("*").matches(text), "1.0", versionspec.VersionRangeError),
     (semver.pseudo_base, "v1.0.0", semver.PseudoVersionError),
     (semver.pseudo_time, "v0.0.0-20201340000000-abcdefabcdef", semver.PseudoVersionError)],
)  # fmt: skip
def test_rule_and_version_parsers_raise_modgate_errors(
    parse: Callable[[str], object], text: str, error: type[ModgateError]
) -> None:
    """They raised plain ValueError, which only some callers caught; now a ModgateError
    that is still a ValueError for those that do."""
    with pytest.raises(error) as raised:
        parse(text)
    assert isinstance(raised.value, ValueError)
