"""modgate.dirhash: "h1:" hashes equal Go's, and module zips are checked as Go checks them."""

from __future__ import annotations

import functools
import io
import json
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

from modgate.dirhash import (
    MAX_GO_MOD,
    MAX_LICENSE,
    MAX_ZIP_FILE,
    ZipCheck,
    ZipError,
    check_file_path,
    check_zip,
    hash_gomod,
    hash_lines,
    hash_zip,
)
from world import ModuleVersion, Upstream, World, go_env, json_objects, proxy_path, run_go

MOD = "example.modgate.test/m"
PREFIX = f"{MOD}@v1.0.0/"

Member = tuple[str, bytes]


def make_zip(members: list[Member], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip with exactly these members, in this order (duplicates allowed)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", method) as archive:
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def declare_size(data: bytes, member: str, size: int) -> bytes:
    """Rewrite the uncompressed size the central directory declares for `member`."""
    out = bytearray(data)
    start = out.find(b"PK\x01\x02")
    while start >= 0:
        (name_len,) = struct.unpack_from("<H", out, start + 28)
        if bytes(out[start + 46 : start + 46 + name_len]) == member.encode():
            struct.pack_into("<I", out, start + 24, size)
            return bytes(out)
        start = out.find(b"PK\x01\x02", start + 4)
    raise AssertionError(f"{member} not in the central directory")


def write(tmp_path: Path, data: bytes, name: str = "m.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# Module versions from the go command's own test proxy (cmd/go/testdata/mod) with the
# go.sum lines its test scripts record for them: (module@version, files, zip h1, go.mod h1).
GO_TESTDATA = [
    (
        "example.com/badchain/c@v1.1.0",
        {"c.go": b"package c\n"},
        "h1:VtTg1g7fOutWKHQf+ag04KLRpdMGSfQ9s9tagVtGW14=",
        (b"module badchain.example.com/c\n", "h1:tyoJj5qh+qtb48sflwdVvk4R+OjPQEY2UJOoibsVLPk="),
    ),
    (
        "rsc.io/testonly@v1.0.0",
        {"testonly.go": b"package testonly\n"},
        "h1:K/VWHdO+Jv7woUXG0GzVNx1czBXUt3Ib1deaMn+xk64=",
        (b"module rsc.io/testonly\n", "h1:OqmGbIFOcF+XrFReLOGZ6BhMM7uMBiQwZsyNmh74SzY="),
    ),
    (
        "example.com/dotname@v1.0.0",
        {"go.mod": b"module example.com/dotname\n\ngo 1.16\n", ".dot/dot.go": b"package dot\n"},
        "h1:Q0JMAn464CnwFVCshs1n4+f5EFiW/eRhnx/fTWjw2Ag=",
        (
            b"module example.com/dotname\n\ngo 1.16\n",
            "h1:7K4VLT7QylRI8H7yZwUkeDH2s19wQnyfp/3oBlItWJ0=",
        ),
    ),
]


@pytest.mark.parametrize(("mod", "files", "zip_h1", "gomod"), GO_TESTDATA)
def test_hashes_equal_go_sum_of_go_testdata(
    tmp_path: Path, mod: str, files: dict[str, bytes], zip_h1: str, gomod: tuple[bytes, str]
) -> None:
    members = [(f"{mod}/{name}", data) for name, data in files.items()]
    assert hash_lines(members) == zip_h1
    assert hash_zip(write(tmp_path, make_zip(members))) == zip_h1
    assert hash_gomod(gomod[0]) == gomod[1]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([], "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
        # `sha256sum B a é | sha256sum`: names in byte order, "B" < "a" < "é".
        (
            [("é", b"accent"), ("a", b"lower"), ("B", b"upper")],
            "h1:mOJ1R6mby4qYLUD2KZUyFUz3+ud+5GnRiZEmltNwVbo=",
        ),
        # The real rsc.io/quote v1.5.2 go.mod, as every go.sum records it.
        (
            [("go.mod", b'module "rsc.io/quote"\n\nrequire "rsc.io/sampler" v1.3.0\n')],
            "h1:LzX7hefJvL54yjefDEDHNONDjII0t9xZLPXsUe+TKr0=",
        ),
    ],
)
def test_hash_lines_literals(files: list[tuple[str, bytes]], expected: str) -> None:
    assert hash_lines(files) == expected
    assert hash_lines(reversed(files)) == expected
    assert (
        hash_lines((name, functools.partial(io.BytesIO, data)) for name, data in files) == expected
    )


def test_hash_lines_refuses_newline_in_name() -> None:
    with pytest.raises(ValueError, match="newlines"):
        hash_lines([("a\nb", b"")])


def test_hash_zip_counts_directories_and_duplicates_as_go_does(tmp_path: Path) -> None:
    data = make_zip([(PREFIX + "d/", b""), (PREFIX + "x", b"first"), (PREFIX + "x", b"second")])
    # HashZip lists the name twice and opens the last entry both times.
    expected = hash_lines(
        [(PREFIX + "d/", b""), (PREFIX + "x", b"second"), (PREFIX + "x", b"second")]
    )
    assert hash_zip(write(tmp_path, data)) == expected


def test_hash_zip_reads_file_objects_and_stored_members() -> None:
    members = [(PREFIX + "go.mod", b"module x\n"), (PREFIX + "a.go", b"package a\n")]
    stored = make_zip(members, zipfile.ZIP_STORED)
    assert hash_zip(io.BytesIO(stored)) == hash_lines(members)


def test_hash_zip_prefix_rejects_member_outside(tmp_path: Path) -> None:
    path = write(tmp_path, make_zip([(PREFIX + "a.go", b""), ("evil/a.go", b"")]))
    assert hash_zip(path) == hash_lines([(PREFIX + "a.go", b""), ("evil/a.go", b"")])
    with pytest.raises(ZipError, match=r'^"evil/a.go": unexpected file') as caught:
        hash_zip(path, prefix=PREFIX)
    assert caught.value.member == "evil/a.go"


def test_hash_zip_keeps_raw_non_utf8_name_bytes(tmp_path: Path) -> None:
    data = make_zip([(PREFIX + "badX", b"x")]).replace(b"badX", b"bad\xff")
    expected = hash_lines([(PREFIX + "bad\udcff", b"x")])
    assert hash_zip(write(tmp_path, data)) == expected


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda data: data.replace(b"content!", b"CONTENT!"), "Bad CRC-32"),
        (lambda data: b"not a zip at all", "not a readable zip file"),
        (lambda data: data[: len(data) // 2], "not a readable zip file"),
    ],
)
def test_hash_zip_refuses_corrupt_zip(tmp_path: Path, corrupt: Any, match: str) -> None:
    data = make_zip([(PREFIX + "a.txt", b"content!")], zipfile.ZIP_STORED)
    with pytest.raises(ZipError, match=match):
        hash_zip(write(tmp_path, corrupt(data)))


def test_hash_zip_refuses_methods_go_cannot_read(tmp_path: Path) -> None:
    path = write(tmp_path, make_zip([(PREFIX + "a.txt", b"x")], zipfile.ZIP_BZIP2))
    with pytest.raises(ZipError, match="unsupported compression method 12"):
        hash_zip(path)


def test_check_zip_accepts_module_zip_and_exposes_root_gomod(tmp_path: Path) -> None:
    members = [
        (PREFIX, b""),
        (PREFIX + "sub/", b""),
        (PREFIX + "go.mod", b"module example.modgate.test/m\n"),
        (PREFIX + "sub/ä b[1].go", b"package sub\n"),
        (PREFIX + "-dash~1.go", b"package m\n"),
        (PREFIX + "LICENSE", b"MIT"),
    ]
    found = check_zip(write(tmp_path, make_zip(members)), MOD, "v1.0.0")
    files = (PREFIX + "go.mod", PREFIX + "sub/ä b[1].go", PREFIX + "-dash~1.go", PREFIX + "LICENSE")
    assert found == ZipCheck(files=files, size=30 + 12 + 10 + 3, gomod=members[2][1])


def test_check_zip_without_gomod(tmp_path: Path) -> None:
    found = check_zip(write(tmp_path, make_zip([(PREFIX + "a.go", b"package a\n")])), MOD, "v1.0.0")
    assert found.gomod is None and found.files == (PREFIX + "a.go",)


BAD_MEMBERS: list[tuple[str, list[Member], str]] = [
    ("outside prefix", [("example.modgate.test/other@v1.0.0/a.go", b"")], "does not have prefix"),
    ("wrong version", [(f"{MOD}@v1.0.1/a.go", b"")], "does not have prefix"),
    ("dot-dot", [(PREFIX + "a/../b.go", b"")], "file path is not clean"),
    ("dot slash", [(PREFIX + "./a.go", b"")], "file path is not clean"),
    ("double slash", [(PREFIX + "a//b.go", b"")], "file path is not clean"),
    ("absolute", [(PREFIX + "/abs.go", b"")], "empty path element"),
    ("colon", [(PREFIX + "a:b.go", b"")], "invalid char ':'"),
    ("quote", [(PREFIX + 'a"b.go', b"")], "invalid char '\"'"),
    ("backslash", [(PREFIX + "a\\b.go", b"")], r"invalid char '\\\\'"),
    ("trailing dot", [(PREFIX + "dir./a.go", b"")], "trailing dot in path element"),
    ("all dots", [(PREFIX + ".../a.go", b"")], 'invalid path element \\"...\\"'),
    ("windows name", [(PREFIX + "sub/Con.txt", b"")], '"Con" disallowed .* on Windows'),
    ("windows com1", [(PREFIX + "lpt9", b"")], '"lpt9" disallowed'),
    ("case collision", [(PREFIX + "README", b""), (PREFIX + "readme", b"")], "collision"),
    ("kelvin collision", [(PREFIX + "k.go", b""), (PREFIX + "\u212a.go", b"")], "collision"),
    ("dir case collision", [(PREFIX + "A/x", b""), (PREFIX + "a/y", b"")], "collision"),
    ("duplicate", [(PREFIX + "a.go", b"1"), (PREFIX + "a.go", b"2")], "multiple entries"),
    ("file and dir", [(PREFIX + "a", b""), (PREFIX + "a/b.go", b"")], "both a file and a dir"),
    ("dir then file", [(PREFIX + "a/", b""), (PREFIX + "a", b"")], "both a file and a dir"),
    ("nested go.mod", [(PREFIX + "sub/go.mod", b"")], "go.mod file not in module root"),
    ("go.mod case", [(PREFIX + "GO.MOD", b"")], "go.mod files must have lowercase names"),
]


@pytest.mark.parametrize(
    ("members", "match"), [case[1:] for case in BAD_MEMBERS], ids=[case[0] for case in BAD_MEMBERS]
)
def test_check_zip_refuses_bad_members(tmp_path: Path, members: list[Member], match: str) -> None:
    data = make_zip([(PREFIX + "ok.go", b"package m\n"), *members])
    with pytest.raises(ZipError, match=match) as caught:
        check_zip(write(tmp_path, data), MOD, "v1.0.0")
    assert caught.value.member == members[-1][0]
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(json.dumps(members[-1][0]) + ": ")


def test_check_zip_refuses_non_utf8_name(tmp_path: Path) -> None:
    data = make_zip([(PREFIX + "badX", b"")]).replace(b"badX", b"bad\xff")
    with pytest.raises(ZipError, match="invalid UTF-8"):
        check_zip(write(tmp_path, data), MOD, "v1.0.0")


@pytest.mark.parametrize(
    ("name", "declared", "match"),
    [
        ("go.mod", MAX_GO_MOD + 1, "go.mod file too large"),
        ("LICENSE", MAX_LICENSE + 1, "LICENSE file too large"),
        ("big.bin", MAX_ZIP_FILE + 1, "total uncompressed size of module contents too large"),
    ],
)
def test_check_zip_size_limits(tmp_path: Path, name: str, declared: int, match: str) -> None:
    data = declare_size(make_zip([(PREFIX + name, b"x")]), PREFIX + name, declared)
    with pytest.raises(ZipError, match=match):
        check_zip(write(tmp_path, data), MOD, "v1.0.0")


def test_check_zip_size_limits_are_inclusive(tmp_path: Path) -> None:
    data = make_zip([(PREFIX + "go.mod", b"x"), (PREFIX + "LICENSE", b"y")])
    data = declare_size(data, PREFIX + "LICENSE", MAX_LICENSE)
    assert check_zip(write(tmp_path, data), MOD, "v1.0.0").size == 1 + MAX_LICENSE


def test_check_zip_reads_gomod_against_its_crc(tmp_path: Path) -> None:
    data = declare_size(make_zip([(PREFIX + "go.mod", b"module m\n")]), PREFIX + "go.mod", 3)
    with pytest.raises(ZipError, match="Bad CRC-32"):
        check_zip(write(tmp_path, data), MOD, "v1.0.0")


def test_check_zip_total_size_error_wins_over_bad_member(tmp_path: Path) -> None:
    members = [(PREFIX + "a:b", b""), (PREFIX + "one", b"1"), (PREFIX + "two", b"2")]
    data = make_zip(members)
    data = declare_size(declare_size(data, PREFIX + "one", 300 << 20), PREFIX + "two", 300 << 20)
    with pytest.raises(ZipError, match="^total uncompressed size") as caught:
        check_zip(write(tmp_path, data), MOD, "v1.0.0")
    assert caught.value.member is None


def test_check_zip_refuses_zip_file_over_limit(tmp_path: Path) -> None:
    path = write(tmp_path, make_zip([(PREFIX + "a.go", b"")]))
    with path.open("r+b") as sparse:
        sparse.truncate(MAX_ZIP_FILE + 1)
    with pytest.raises(ZipError, match=f"module zip file is too large \\({MAX_ZIP_FILE + 1} bytes"):
        check_zip(path, MOD, "v1.0.0")


def test_check_zip_refuses_unreadable_method_and_garbage(tmp_path: Path) -> None:
    bz = write(tmp_path, make_zip([(PREFIX + "a.go", b"x")], zipfile.ZIP_LZMA), "lzma.zip")
    with pytest.raises(ZipError, match="unsupported compression method 14"):
        check_zip(bz, MOD, "v1.0.0")
    with pytest.raises(ZipError, match="not a readable zip file"):
        check_zip(io.BytesIO(b"PK\x03\x04 garbage"), MOD, "v1.0.0")


def patch_headers(data: bytes, *, flags: int = 0, version: int | None = None) -> bytes:
    """Set general-purpose flag bits (local and central headers) or the central
    directory's "version needed to extract", as a hostile upstream could."""
    out = bytearray(data)
    for signature, version_at, flags_at in ((b"PK\x03\x04", 4, 6), (b"PK\x01\x02", 6, 8)):
        start = out.find(signature)
        while start >= 0:
            (old,) = struct.unpack_from("<H", out, start + flags_at)
            struct.pack_into("<H", out, start + flags_at, old | flags)
            if version is not None and signature == b"PK\x01\x02":
                struct.pack_into("<H", out, start + version_at, version)
            start = out.find(signature, start + 4)
    return bytes(out)


def test_members_flagged_encrypted_are_read_as_go_reads_them(tmp_path: Path) -> None:
    """archive/zip ignores the encryption flags (bits 0, 5, 6): go hashes the stored bytes."""
    members = [(PREFIX + "go.mod", b"module " + MOD.encode() + b"\n"), (PREFIX + "a.go", b"x")]
    plain = write(tmp_path, make_zip(members), "plain.zip")
    for bits in (0x1, 0x20, 0x40, 0x61):
        flagged = write(tmp_path, patch_headers(make_zip(members), flags=bits), f"{bits}.zip")
        assert hash_zip(flagged, PREFIX) == hash_zip(plain, PREFIX)
        assert check_zip(flagged, MOD, "v1.0.0") == check_zip(plain, MOD, "v1.0.0")


def test_a_member_really_encrypted_is_refused_by_its_crc(tmp_path: Path) -> None:
    data = make_zip([(PREFIX + "go.mod", b"module m\n")], zipfile.ZIP_STORED)
    ciphered = patch_headers(
        data.replace(b"module m\n", b"\x8f\x11\x03\xc4\x00\x9a\x17\x02\xee"), flags=0x1
    )
    with pytest.raises(ZipError, match="Bad CRC-32 for file '.*/go.mod'"):
        check_zip(write(tmp_path, ciphered), MOD, "v1.0.0")
    with pytest.raises(ZipError, match="Bad CRC-32"):
        hash_zip(write(tmp_path, ciphered))


def test_a_version_needed_to_extract_beyond_zip_6_3_is_refused_clearly(tmp_path: Path) -> None:
    path = write(tmp_path, patch_headers(make_zip([(PREFIX + "a.go", b"x")]), version=99))
    with pytest.raises(ZipError, match=r"not a readable zip file: zip file version 9\.9"):
        check_zip(path, MOD, "v1.0.0")
    with pytest.raises(ZipError, match=r"zip file version 9\.9"):
        hash_zip(path, PREFIX)


def test_a_central_directory_placed_past_its_end_is_refused_clearly(tmp_path: Path) -> None:
    """Offsets that put the local headers before the file's start made zipfile seek to a
    negative position: OSError (EINVAL) escaped. Found by tests/test_fuzz_parsers.py."""
    data = bytearray(make_zip([(PREFIX + "go.mod", b"module m\n")]))  # check_zip reads it
    end = data.rfind(b"PK\x05\x06")
    (offset,) = struct.unpack_from("<I", data, end + 16)
    struct.pack_into("<I", data, end + 16, offset + 1000)
    path = write(tmp_path, bytes(data))
    with pytest.raises(ZipError, match="not a readable zip file: an offset points outside it"):
        check_zip(path, MOD, "v1.0.0")
    with pytest.raises(ZipError, match="an offset points outside it"):
        hash_zip(path)


def test_hash_zip_refuses_a_member_name_with_a_newline(tmp_path: Path) -> None:
    """dirhash.HashZip refuses it (its line format cannot hold one); a plain ValueError
    escaped before."""
    path = write(tmp_path, make_zip([(PREFIX + "a\nb.go", b"x")]))
    with pytest.raises(ZipError, match="dirhash: filenames with newlines") as raised:
        hash_zip(path)
    assert raised.value.member == PREFIX + "a\nb.go"


def test_a_member_thousands_of_directories_deep_is_checked_as_go_checks_it(tmp_path: Path) -> None:
    """module.CheckFilePath has no depth limit; the collision check walks every parent."""
    deep = PREFIX + "d/" * 5000 + "x.go"
    path = write(tmp_path, make_zip([(deep, b"x"), (PREFIX + "D/x.go", b"y")]))
    with pytest.raises(ZipError, match='case-insensitive file name collision: "d" and "D"'):
        check_zip(path, MOD, "v1.0.0")
    ok = write(tmp_path, make_zip([(deep, b"x")]), "ok.zip")
    assert check_zip(ok, MOD, "v1.0.0").files == (deep,)


@pytest.mark.parametrize(
    "path",
    ["a.go", "dir/ä b.txt", "x/!#$%&()+,-.=@[]^_{}~.go", "-dash.go", "conx.go", "a~1.go", ".a"],
)
def test_check_file_path_accepts(path: str) -> None:
    check_file_path(path)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("", "empty string"),
        ("/a", "empty path element"),
        ("a/", "trailing slash"),
        ("a//b", "double slash"),
        (".", "invalid path element"),
        ("a/../b", "invalid path element"),
        ("a.", "trailing dot"),
        ("a*b", "invalid char '\\*'"),
        ("a\nb", "invalid char"),
        ("NUL", "disallowed .* on Windows"),
        ("dir/lpt1.txt", "disallowed .* on Windows"),
        ("bad\udcff", "invalid UTF-8"),
    ],
)
def test_check_file_path_refuses(path: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_file_path(path)


# --- against the real go command ---------------------------------------------------------


def exotic_zip(prefix: str) -> bytes:
    """A valid module zip that no go tool writes: unsorted, stored, directory entries,
    a space and non-ASCII letters in names."""
    members = [
        (prefix + "z.go", b"package exotic\n"),
        (prefix, b""),
        (prefix + "docs/", b""),
        (prefix + "docs/ünïcode file.txt", b"\x00\x01binary\xff"),
        (prefix + "go.mod", b"module example.modgate.test/exotic\n"),
    ]
    return make_zip(members, zipfile.ZIP_STORED)


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path, dict[str, Any]]:
    """A few module versions served from a proxy tree and fetched by `go mod download`."""
    tmp = tmp_path_factory.mktemp("dirhash-go")
    world = World(
        [
            ModuleVersion("example.modgate.test/plain", "v0.1.0"),
            ModuleVersion(
                "example.modgate.test/Mixed/Case",
                "v1.2.3-RC.1",
                requires=[("example.modgate.test/plain", "v0.1.0")],
            ),
            ModuleVersion("example.modgate.test/big", "v1.0.0", payload_bytes=3 << 20),
            ModuleVersion("example.modgate.test/exotic", "v1.0.0"),
        ],
        workdir=tmp / "work",
    )
    tree = world.write_proxy_tree(tmp / "proxy")
    exotic = tree / proxy_path("example.modgate.test/exotic", "v1.0.0", ".zip")
    exotic.write_bytes(exotic_zip("example.modgate.test/exotic@v1.0.0/"))
    with Upstream(tree) as upstream:
        done = run_go(
            ["mod", "download", "-json", *(mv.id for mv in world)], go_env(tmp, upstream.url), tmp
        )
    reports = {f"{o['Path']}@{o['Version']}": o for o in json_objects(done.stdout)}
    return world, tree, reports


def test_go_reports_the_hashes_dirhash_computes(
    downloaded: tuple[World, Path, dict[str, Any]],
) -> None:
    world, tree, reports = downloaded
    assert sorted(reports) == sorted(mv.id for mv in world)
    for mv in world:
        report = reports[mv.id]
        zip_file = tree / proxy_path(mv.path, mv.version, ".zip")
        assert "Error" not in report
        assert report["Sum"] == hash_zip(zip_file, prefix=mv.prefix), mv.id
        assert report["GoModSum"] == hash_gomod(mv.gomod), mv.id
        check_zip(zip_file, mv.path, mv.version)


def test_fixture_hashes_match_go_for_fixture_built_zips(
    downloaded: tuple[World, Path, dict[str, Any]],
) -> None:
    world, _, reports = downloaded
    for mv in world:
        if mv.path != "example.modgate.test/exotic":
            assert reports[mv.id]["Sum"] == mv.zip_hash, mv.id
            assert reports[mv.id]["GoModSum"] == mv.gomod_hash, mv.id


def test_go_unpacked_the_exotic_zip_as_check_zip_describes(
    downloaded: tuple[World, Path, dict[str, Any]],
) -> None:
    world, tree, reports = downloaded
    mv = world.get("example.modgate.test/exotic", "v1.0.0")
    found = check_zip(tree / proxy_path(mv.path, mv.version, ".zip"), mv.path, mv.version)
    unpacked = Path(reports[mv.id]["Dir"])
    on_disk = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file())
    assert on_disk == sorted(name.removeprefix(mv.prefix) for name in found.files)
    assert found.gomod == (unpacked / "go.mod").read_bytes()
