"""Every parser that reads upstream, client or file input, as a target taking bytes.

Shared by the hypothesis property tests (tests/test_fuzz_parsers.py) and the
coverage-guided run (scripts/fuzz): a target turns its bytes into the parser's input
and calls it. The property both check: the only exceptions that escape are modgate's
own (`ModgateError`; `ConfigError` for rules.yaml). `SEEDS` holds valid inputs for each
target, so mutation starts from what an upstream really sends.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

from modgate import dirhash, gomod, goproxy, patterns, semver, versionspec
from modgate.config import parse_config
from modgate.errors import ConfigError, ModgateError, UpstreamError
from modgate.sumdb import SumdbVerifier, note, tlog

MODULE, VERSION = "example.com/m", "v1.0.0"
PREFIX = f"{MODULE}@{VERSION}/"
Target = Callable[[bytes], None]


def text(data: bytes) -> str:
    """Bytes as the text a client or file would give (undecodable bytes replaced)."""
    return data.decode("utf-8", "replace")


SEP = b"\0\xff\0"


def split(data: bytes, parts: int) -> list[bytes]:
    """Cut the input at SEP into `parts` pieces (missing ones empty)."""
    pieces = data.split(SEP, parts - 1)
    return pieces + [b""] * (parts - len(pieces))


def each(*calls: Callable[[], object]) -> None:
    """Make every call, each refusing on its own; then re-raise the first refusal."""
    refused: ModgateError | None = None
    for call in calls:
        try:
            call()
        except ModgateError as e:
            refused = refused or e
    if refused is not None:
        raise refused


def request(data: bytes) -> None:
    """A client's request path: escaping, module path and version checks."""
    req = goproxy.parse_request(text(data))
    assert goproxy.parse_request(req.path) == req, "a parsed path must parse to itself"
    str(req)


def versions(data: bytes) -> None:
    """Versions from .info, lists and go.mod: semver and pseudo-versions."""
    v, w = (text(piece) for piece in split(data, 2))
    semver.compare(v, w)
    semver.canonical_module_version(v)
    semver.sort_versions([v, w])
    semver.max_version(v, w)
    if semver.is_pseudo(v):
        semver.pseudo_base(v)
        semver.pseudo_time(v)
        semver.pseudo_rev(v)


def version_range(data: bytes) -> None:
    """A rules.yaml version range, and a version matched against it."""
    spec, version = (text(piece) for piece in split(data, 2))
    parsed = versionspec.parse_spec(spec)
    if semver.is_valid(version):
        parsed.matches(version)


def pattern(data: bytes) -> None:
    """A rules.yaml module pattern, GOPRIVATE-style globs, and a module path."""
    glob, path = (text(piece) for piece in split(data, 2))
    each(lambda: glob.startswith("re:") or patterns.compile_pattern(glob).matches(path),
         lambda: patterns.match_prefix_patterns(glob, path))  # fmt: skip


def go_mod(data: bytes) -> None:
    """A go.mod from an upstream (`.mod`, a zip's go.mod): the directives rules read."""
    parsed = gomod.parse_gomod(text(data))
    for retraction in parsed.retractions:
        gomod.retracted_by(retraction.low, parsed.retractions)


def go_sum(data: bytes) -> None:
    gomod.parse_gosum(text(data))


def zip_file(data: bytes) -> None:
    """A module zip from an upstream: protocol check, zip rules, and its h1: hash."""
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "m.zip"
        body.write_bytes(data)
        goproxy.check_body(goproxy.parse_request(f"{MODULE}/@v/{VERSION}.zip"), body)
        dirhash.check_zip(body, MODULE, VERSION)
        dirhash.hash_zip(body, PREFIX)


def info(data: bytes) -> None:
    """A `.info` or `@latest` answer from an upstream."""
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "info"
        body.write_bytes(data)
        paths = (f"{MODULE}/@v/{VERSION}.info", f"{MODULE}/@latest", f"{MODULE}/@v/list",
                 f"{MODULE}/@v/{VERSION}.mod", "sumdb/sum.fuzz.test/tile/8/0/000")  # fmt: skip
        each(*(lambda p=p: goproxy.check_body(goproxy.parse_request(p), body) for p in paths))


def signed_note(data: bytes) -> None:
    """A signed note (a tree head) and a verifier key, both from a checksum database."""
    key = text(data.split(b"\n", 1)[0])
    each(lambda: note.open_note(data, [_database().verifier]),
         lambda: note.parse_verifier_key(key))  # fmt: skip


def tree_and_record(data: bytes) -> None:
    """A tree head's text and a lookup record, as tlog parses them."""
    each(lambda: tlog.parse_tree(data), lambda: tlog.parse_record(data))


def tile(data: bytes) -> None:
    """A tile path (client request) and a tile's bytes at an index (upstream answer)."""
    path, body, index = split(data, 3)
    t = tlog.parse_tile_path(text(path))
    stored = int.from_bytes(index[:8], "big") if index else 0
    if t.level >= 0:  # data tiles hold records, not hashes
        tlog.hash_from_tile(t, body, stored)


def lookup(data: bytes) -> None:
    """A checksum database's lookup answer and the tiles proving it, all upstream-made."""
    response, tile_data = split(data, 2)
    db = _database()

    def fetch_tile(path: str) -> bytes:
        if tile_data:
            return tile_data
        if path in db.tiles:
            return db.tiles[path]
        raise UpstreamError(f"{path}: 404 Not Found")  # as the gateway's fetch fails

    each(lambda: SumdbVerifier(db.verifier.key_text, fetch_tile).lookup(MODULE, VERSION, response),
         lambda: SumdbVerifier(db.verifier.key_text, fetch_tile).merge_latest(response))  # fmt: skip


def rules_yaml(data: bytes) -> None:
    """rules.yaml as an operator (or an editor mid-save) leaves it."""
    try:
        parse_config(text(data))
    except ModgateError as e:
        if not isinstance(e, ConfigError):
            raise AssertionError(f"rules.yaml: {type(e).__name__} instead of ConfigError") from e


TARGETS: dict[str, Target] = {
    "request": request,
    "versions": versions,
    "version_range": version_range,
    "pattern": pattern,
    "go_mod": go_mod,
    "go_sum": go_sum,
    "zip": zip_file,
    "info": info,
    "note": signed_note,
    "tree_record": tree_and_record,
    "tile": tile,
    "lookup": lookup,
    "rules_yaml": rules_yaml,
}


def check(target: Target, data: bytes) -> None:
    """Run a target: a ModgateError is a clean refusal; anything else escapes."""
    with contextlib.suppress(ModgateError):
        target(data)


# --- seeds ---------------------------------------------------------------------------


class _Database:
    """A small checksum database: a signed tree, a lookup answer and its tiles."""

    def __init__(self) -> None:
        signer = note.parse_signer_key(note.generate_key("sumdb.fuzz.test")[0])
        self.verifier = signer.verifier
        records = [
            f"{MODULE} v0.{i}.0 h1:{'A' * 43}=\n{MODULE} v0.{i}.0/go.mod h1:{'B' * 43}=\n".encode()
            for i in range(5)
        ] + [
            f"{MODULE} {VERSION} h1:{'C' * 43}=\n{MODULE} {VERSION}/go.mod h1:{'D' * 43}=\n".encode()
        ]
        hashes: list[bytes] = []
        for i, record in enumerate(records):
            hashes += tlog.stored_hashes(i, record, tlog.hashes_reader(hashes))
        n = len(records)
        tree = tlog.Tree(n, tlog.tree_hash(n, tlog.hashes_reader(hashes)))
        self.latest = note.sign(tlog.format_tree(tree).decode(), signer)
        self.lookup = tlog.format_record(n - 1, records[-1]) + self.latest
        self.tiles: dict[str, bytes] = {}
        for t in tlog.new_tiles(8, 0, n):
            self.tiles[t.path()] = tlog.read_tile_data(t, tlog.hashes_reader(hashes))


@cache
def _database() -> _Database:
    return _Database()


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


GOMOD = (
    b'module example.com/m\n\ngo 1.21\n\nrequire (\n\texample.com/a v1.2.3 // indirect\n\t"example.com/q" v0.1.0\n)\n'
    b"replace example.com/a => ../a\n\n// Broken.\nretract [v0.9.0, v0.9.5]\nretract v1.0.1 // leaks\n"
)
RULES = (
    b"proxies:\n  - url: https://proxy.fuzz.test\n    upstream: http://127.0.0.1:9\n"
    b"cache:\n  size_limit: 10GB\n  ttl: 10m\n"
    b"checksum:\n  private: 'corp.example/*'\n  databases: []\n"
    b"hosts:\n  allow: [git.fuzz.test]\n"
    b"modules:\n  - deny: example.com/lib\n    versions: '>=1.2.0 || ~0.3'\n    reason: no\n"
    b"  - allow: '**'\n    refuse: [retracted]\n"
)


def j(*parts: bytes) -> bytes:
    """A multi-part input, as `split` cuts it."""
    return SEP.join(parts)


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs per target (the start of every mutation)."""
    db = _database()
    first_tile = next(iter(db.tiles))
    return {
        "request": [b"example.com/!m/@v/v1.0.0.zip", b"example.com/m/@latest", b"example.com/m/@v/list",
                    b"sumdb/sum.fuzz.test/lookup/example.com/m@v1.0.0", b"sumdb/s.test/tile/8/0/x001/002.p/5",
                    b"gopkg.in/yaml.v3/@v/v3.0.1.info", b"example.com/m/v2/@v/v2.0.0-20200101000000-abcdefabcdef.mod"],
        "versions": [j(b"v1.2.3", b"v1.2.3-pre.1+build"), j(b"v0.0.0-20200101000000-abcdefabcdef", b"v1.0.0+incompatible"),
                     j(b"v1.2.4-0.20200101000000-abcdefabcdef", b"v2")],
        "version_range": [j(b">=1.2.0 <2 || ~0.3.1 || ^1.2", b"v1.2.3"), j(b"!=v1.3.0, 1.2.*", b"v1.3.0-rc.1")],
        "pattern": [j(b"example.com/**/internal", b"example.com/a/b/internal"), j(b"corp.example/*,other/[a-c]", b"other/b"),
                    j(b"=example.com/m", b"example.com/m"), j(b"re:example\\.com/.*", b"example.com/x")],
        "go_mod": [GOMOD, b'module m\n"//"\nretract v1.0.0\n'],
        "go_sum": [b"example.com/m v1.0.0 h1:abc=\nexample.com/m v1.0.0/go.mod h1:def=\n"],
        "zip": [_zip([(PREFIX + "go.mod", b"module example.com/m\n"), (PREFIX + "a/b.go", b"package a\n"),
                      (PREFIX + "LICENSE", b"MIT\n")])],
        "info": [b'{"Version":"v1.0.0","Time":"2020-01-01T00:00:00Z","Origin":{"VCS":"git"}}', b"v1.0.0\nv1.1.0\n"],
        "note": [db.latest, db.verifier.key_text.encode() + b"\n"],
        "tree_record": [db.latest, db.lookup],
        "tile": [j(first_tile.encode(), db.tiles[first_tile], (3).to_bytes(8, "big"))],
        "lookup": [db.lookup, j(db.lookup, db.tiles[first_tile])],
        "rules_yaml": [RULES, json.dumps({"modules": [{"allow": "**"}]}).encode()],
    }  # fmt: skip
