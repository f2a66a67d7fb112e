"""modgate.goproxy: request parsing, escaping and answer checks, as tables."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from modgate.errors import ProtocolError
from modgate.goproxy import Kind, ModRequest, check_body, check_module_path, escape, parse_request


@pytest.mark.parametrize(
    ("path", "kind", "module", "version", "immutable"),
    [
        ("golang.org/x/text/@v/list", Kind.LIST, "golang.org/x/text", "", False),
        ("golang.org/x/text/@latest", Kind.LATEST, "golang.org/x/text", "", False),
        ("golang.org/x/text/@v/v0.3.2.info", Kind.INFO, "golang.org/x/text", "v0.3.2", True),
        ("golang.org/x/text/@v/v0.3.2.mod", Kind.MOD, "golang.org/x/text", "v0.3.2", True),
        ("golang.org/x/text/@v/v0.3.2.zip", Kind.ZIP, "golang.org/x/text", "v0.3.2", True),
        # a query, not a canonical version: its answer changes over time
        ("golang.org/x/text/@v/master.info", Kind.INFO, "golang.org/x/text", "master", False),
        ("golang.org/x/text/@v/v0.3.info", Kind.INFO, "golang.org/x/text", "v0.3", False),
        # "!" escapes an uppercase letter, in paths and versions
        ("github.com/!burnt!sushi/toml/@v/list", Kind.LIST, "github.com/BurntSushi/toml", "", False),
        ("example.com/m/@v/v1.0.0-!r!c1.info", Kind.INFO, "example.com/m", "v1.0.0-RC1", True),
        ("example.com/m/v2/@v/v2.0.0.mod", Kind.MOD, "example.com/m/v2", "v2.0.0", True),
        ("example.com/m/@v/v2.0.0+incompatible.zip", Kind.ZIP, "example.com/m", "v2.0.0+incompatible", True),
        ("example.com/m/@v/v0.0.0-20191109021931-daa7c04131f5.mod", Kind.MOD, "example.com/m",
         "v0.0.0-20191109021931-daa7c04131f5", True),
        ("gopkg.in/yaml.v3/@v/list", Kind.LIST, "gopkg.in/yaml.v3", "", False),
        ("sumdb/sum.golang.example/supported", Kind.SUMDB_SUPPORTED, "", "", False),
        ("sumdb/sum.golang.example/latest", Kind.SUMDB_LATEST, "", "", False),
        ("sumdb/sum.golang.example/lookup/example.com/!m@v1.0.0", Kind.SUMDB_LOOKUP,
         "example.com/M", "v1.0.0", True),
        ("sumdb/sum.golang.example/tile/8/0/x001/234", Kind.SUMDB_TILE, "", "", True),
        ("sumdb/sum.golang.example/tile/8/1/005.p/7", Kind.SUMDB_TILE, "", "", True),
        ("sumdb/sum.golang.example/tile/8/data/000", Kind.SUMDB_TILE, "", "", True),
    ],
)  # fmt: skip
def test_parse_request(path: str, kind: Kind, module: str, version: str, immutable: bool) -> None:
    req = parse_request(path)
    assert (req.kind, req.module, req.version, req.immutable) == (kind, module, version, immutable)
    assert req.path == path  # re-escaping gives back the same path: one cache key per answer


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("github.com/BurntSushi/toml/@v/list", 400, "invalid escaped module path"),
        ("github.com/!/toml/@v/list", 400, "invalid escaped module path"),
        ("github.com/x!/@v/list", 400, "invalid escaped module path"),
        ("nodot/x/@v/list", 400, "missing dot in first path element"),
        ("example.com/../etc/@v/list", 400, "invalid path element"),
        ("example.com//m/@v/list", 400, "double slash"),
        ("example.com/m/v1/@v/list", 400, "invalid version"),
        ("example.com/m/v1.2/@v/list", 400, "invalid version"),
        ("example.com/com1/@v/list", 400, "disallowed as path element component on Windows"),
        ("example.com/m~1/@v/list", 400, "trailing tilde and digits"),
        ("example.com/m/@v/V1.0.0.info", 400, "invalid escaped version"),
        ("example.com/m/@v/v1.0.0/x.info", 404, "not a module proxy path"),
        ("example.com/m/@v/v1.0.info.gz", 404, "not a module proxy path"),
        ("example.com/m/@v/v1.0.mod", 404, "needs a canonical version"),
        ("example.com/m/@v/master.zip", 404, "needs a canonical version"),
        ("example.com/m/@v/v1.0.0+build.zip", 404, "needs a canonical version"),
        ("example.com/m", 404, "not a module proxy path"),
        ("", 404, "not a module proxy path"),
        ("sumdb/sum.golang.example/lookup/example.com/m", 400, "needs module@version"),
        ("sumdb/sum.golang.example/tile/8/0/1234", 404, "not a checksum database path"),
        ("sumdb/sum example/latest", 404, "not a checksum database name"),
        ("sumdb/sum+example/latest", 404, "not a checksum database name"),
        ("sumdb/latest", 404, "not a checksum database name"),
        ("sumdb//latest", 404, "not a checksum database name"),
        ("sumdb/sum.golang.example/../../etc/passwd", 404, "not a checksum database path"),
        ("sumdb/db.example/../x/latest", 404, "not a checksum database path"),
        ("sumdb/db.example//x/latest", 404, "not a checksum database path"),
        ("sumdb/db.example/x/", 404, "not a checksum database path"),
    ],
)
def test_parse_request_refuses(path: str, status: int, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        parse_request(path)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("plain", "escaped"),
    [("github.com/Azure/azure-sdk", "github.com/!azure/azure-sdk"), ("v1.0.0-RC1", "v1.0.0-!r!c1"),
     ("example.com/m", "example.com/m")],
)  # fmt: skip
def test_escape(plain: str, escaped: str) -> None:
    assert escape(plain) == escaped


@pytest.mark.parametrize(
    ("path", "problem"),
    [("example.com/m", ""), ("example.com/m/v2", ""), ("gopkg.in/yaml.v2", ""),
     ("gopkg.in/yaml", "invalid version"), ("-example.com", "leading dash"),
     ("example.com/.hidden", "leading dot"), ("example.com/m/", "trailing slash"),
     ("Example.com/m", "invalid char in first path element"), ("example.com/a b", "invalid char")],
)  # fmt: skip
def test_check_module_path(path: str, problem: str) -> None:
    found = check_module_path(path)
    assert found.startswith(problem) and bool(found) == bool(problem)


def _zip(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n in names:
            zf.writestr(n, "x")
    return buf.getvalue()


GOOD_ZIP = _zip(["example.com/m@v1.0.0/go.mod", "example.com/m@v1.0.0/m.go"])


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("example.com/m/@v/v1.0.0.zip", GOOD_ZIP, None),
        ("example.com/m/@v/v1.0.0.zip", GOOD_ZIP[: len(GOOD_ZIP) // 2], "not a readable zip"),
        ("example.com/m/@v/v1.0.0.zip", _zip(["other.com/x@v1.0.0/go.mod"]), "outside"),
        ("example.com/m/@v/v1.0.0.info", b'{"Version":"v1.0.0","Time":"2020-01-01T00:00:00Z"}', None),
        ("example.com/m/@v/v1.0.0.info", b'{"Version":"v1.0.0","Ti', "not JSON"),
        ("example.com/m/@latest", b'{"Version":"latest"}', "no valid Version"),
        ("example.com/m/@latest", b"[]", "no valid Version"),
        ("example.com/m/@v/list", b"v1.0.0\nv1.1.0\n", None),
        ("example.com/m/@v/list", b"v1.0.0\n\xff", "not UTF-8"),
        ("example.com/m/@v/v1.0.0.mod", b"module example.com/m\n", None),
        ("sumdb/db.example/tile/8/0/000", b"", "empty tile"),
    ],
)  # fmt: skip
def test_check_body(tmp_path: Path, path: str, body: bytes, problem: str | None) -> None:
    f = tmp_path / "body"
    f.write_bytes(body)
    req = parse_request(path)
    if problem is None:
        check_body(req, f)
    else:
        with pytest.raises(ProtocolError, match=problem):
            check_body(req, f)


def test_request_names_module_and_version() -> None:
    assert str(parse_request("example.com/m/@v/v1.0.0.zip")) == "example.com/m@v1.0.0 (zip)"
    assert (
        str(ModRequest(Kind.LIST, "example.com/m/@v/list", "example.com/m"))
        == "example.com/m (list)"
    )


@pytest.mark.parametrize(
    ("path", "sum_version"),
    [("example.com/m/@v/v1.0.0.zip", "v1.0.0"), ("example.com/m/@v/v1.0.0.mod", "v1.0.0/go.mod"),
     ("example.com/m/@v/v1.0.0.info", "v1.0.0")],
)  # fmt: skip
def test_sum_version_names_the_go_sum_line(path: str, sum_version: str) -> None:
    assert parse_request(path).sum_version == sum_version


@pytest.mark.parametrize(
    ("path", "databases", "kind", "name", "module"),
    [
        # cmd/go's own test database: go asks <proxy>/sumdb/localhost.localdev/sumdb/...
        ("sumdb/localhost.localdev/sumdb/supported", (), Kind.SUMDB_SUPPORTED,
         "localhost.localdev/sumdb", ""),
        ("sumdb/localhost.localdev/sumdb/latest", (), Kind.SUMDB_LATEST,
         "localhost.localdev/sumdb", ""),
        ("sumdb/localhost.localdev/sumdb/lookup/rsc.io/quote@v1.5.2", (), Kind.SUMDB_LOOKUP,
         "localhost.localdev/sumdb", "rsc.io/quote"),
        ("sumdb/localhost.localdev/sumdb/tile/8/0/000", (), Kind.SUMDB_TILE,
         "localhost.localdev/sumdb", ""),
        ("sumdb/db.example:8443/a/b/tile/8/data/000", (), Kind.SUMDB_TILE, "db.example:8443/a/b", ""),
        # names go accepts: upper case, a port, an IP address
        ("sumdb/Sum.Example/latest", (), Kind.SUMDB_LATEST, "Sum.Example", ""),
        ("sumdb/127.0.0.1:8080/latest", (), Kind.SUMDB_LATEST, "127.0.0.1:8080", ""),
        # a name with "lookup" in it: the module path decides where it ends...
        ("sumdb/db.example/lookup/lookup/x.example/m@v1.0.0", (), Kind.SUMDB_LOOKUP,
         "db.example/lookup", "x.example/m"),
        # ...unless both readings are valid: then only the known names can tell
        ("sumdb/a.example/lookup/b.example/lookup/c.example/m@v1.0.0", (), Kind.SUMDB_LOOKUP,
         "a.example", "b.example/lookup/c.example/m"),
        ("sumdb/a.example/lookup/b.example/lookup/c.example/m@v1.0.0",
         ("a.example", "a.example/lookup/b.example"), Kind.SUMDB_LOOKUP,
         "a.example/lookup/b.example", "c.example/m"),
        # a lookup whose module path holds "tile" is a lookup
        ("sumdb/db.example/lookup/x.example/tile/8/0/000@v1.0.0", ("db.example",),
         Kind.SUMDB_LOOKUP, "db.example", "x.example/tile/8/0/000"),
    ],
)  # fmt: skip
def test_parse_sumdb_names_with_a_path(
    path: str, databases: tuple[str, ...], kind: Kind, name: str, module: str
) -> None:
    req = parse_request(path, databases)
    assert (req.kind, req.sumdb, req.module) == (kind, name, module)
    assert req.path == path
    assert f"sumdb/{req.sumdb}/{req.sumdb_path}" == path


def test_parse_sumdb_with_a_known_name_reports_its_own_error() -> None:
    with pytest.raises(ProtocolError, match="needs module@version") as info:
        parse_request(
            "sumdb/localhost.localdev/sumdb/lookup/x.example/m", ("localhost.localdev/sumdb",)
        )
    assert info.value.status == 400


def _version_needed(data: bytes, version: int) -> bytes:
    """Set every central-directory entry's "version needed to extract"."""
    out = bytearray(data)
    start = out.find(b"PK\x01\x02")
    while start >= 0:
        out[start + 6 : start + 8] = version.to_bytes(2, "little")
        start = out.find(b"PK\x01\x02", start + 4)
    return bytes(out)


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("example.com/m/@v/v1.0.0.zip", _version_needed(GOOD_ZIP, 99), r"not a readable zip file \(zip file version 9\.9\)"),
        ("example.com/m/@v/v1.0.0.info", b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
        ("example.com/m/@latest", b'{"Version":' * 5_000 + b'"v1.0.0"' + b"}" * 5_000, "JSON nested too deeply"),
        ("example.com/m/@latest", b'{"Version":"v1.0.0","Time":1e999999}', None),
    ],
)  # fmt: skip
def test_check_body_refuses_hostile_answers_cleanly(
    tmp_path: Path, path: str, body: bytes, problem: str | None
) -> None:
    f = tmp_path / "body"
    f.write_bytes(body)
    if problem is None:
        check_body(parse_request(path), f)
    else:
        with pytest.raises(ProtocolError, match=problem):
            check_body(parse_request(path), f)
