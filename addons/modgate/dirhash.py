"""The "h1:" hashes of go.sum, and the checks the go command makes on a module zip.

Pure code: no mitmproxy, no network. It follows the Go sources that define both:

- golang.org/x/mod/sumdb/dirhash/hash.go: `Hash1` and `HashZip`, the "h1:" hash.
- cmd/go/internal/modfetch/fetch.go: `downloadZip` (every member must sit under
  "<module>@<version>/" before the zip is hashed) and `goModSum` (a go.mod is hashed
  as one file named "go.mod").
- golang.org/x/mod/zip/zip.go: `checkZip` and `Unzip`, the rules a module zip must
  satisfy before its files are trusted (names, collisions, sizes).
- golang.org/x/mod/module/module.go: `CheckFilePath`, what a file path may look like.

A zip that breaks a rule raises `ZipError`, whose one-line message names the member.
"""

from __future__ import annotations

import base64
import copy
import errno
import functools
import hashlib
import json
import os
import posixpath
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from modgate.errors import ModgateError

# golang.org/x/mod/zip/zip.go: MaxZipFile, MaxGoMod, MaxLICENSE.
MAX_ZIP_FILE = 500 << 20
MAX_GO_MOD = 16 << 20
MAX_LICENSE = 16 << 20

_CHUNK = 1 << 20
# Go's archive/zip reads only these two methods; any other fails when a member is opened.
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_UTF8_FLAG = 0x800
# Encrypted, compressed patched data, strong encryption: flags archive/zip ignores.
_ENCRYPTION_FLAGS = 0x1 | 0x20 | 0x40

Content = bytes | Callable[[], IO[bytes]]
"""A file's content: the bytes themselves, or a callable that opens a stream of them."""

ZipSource = str | os.PathLike[str] | IO[bytes]
"""A zip file: its path, or a seekable binary file object."""


class ZipError(ModgateError, ValueError):
    """A module zip is unreadable or breaks a rule of the module zip format.

    `member` is the offending member's name as stored in the zip, when one is to blame.
    """

    def __init__(self, reason: str, member: str | None = None) -> None:
        super().__init__(f"{_quote(member)}: {reason}" if member is not None else reason)
        self.reason = reason
        self.member = member


@dataclass(frozen=True)
class ZipCheck:
    """What `check_zip` found in a module zip that satisfies every rule.

    `files` are the member names (with their "<module>@<version>/" prefix) of the
    regular files, `size` is their total declared uncompressed size, and `gomod` is
    the content of the go.mod at the module root, if the zip has one.
    """

    files: tuple[str, ...]
    size: int
    gomod: bytes | None


def hash_lines(files: Iterable[tuple[str, Content]]) -> str:
    """Return the "h1:" hash of named files (dirhash.Hash1).

    Hash1 is SHA-256 over one line per file, "<hex sha256 of content>  <name>\\n",
    in byte order of the names, base64-encoded (standard alphabet, padded) behind
    "h1:". Contents given as openers are streamed, never read whole.
    """
    summary = hashlib.sha256()
    for name, content in sorted(files, key=lambda file: _name_bytes(file[0])):
        if "\n" in name:  # dirhash.Hash1 refuses them too: the line format cannot hold one
            raise ZipError("dirhash: filenames with newlines are not supported", name)
        summary.update(f"{_sha256_hex(content)}  ".encode() + _name_bytes(name) + b"\n")
    return "h1:" + base64.b64encode(summary.digest()).decode("ascii")


def hash_gomod(data: bytes) -> str:
    """Return the go.sum hash of a go.mod file ("<module> <version>/go.mod h1:…").

    modfetch.goModSum hashes the content as a single file named "go.mod".
    """
    return hash_lines([("go.mod", data)])


def hash_zip(source: ZipSource, prefix: str | None = None) -> str:
    """Return the go.sum hash of a module zip (dirhash.HashZip).

    Every member, directories included, is hashed under its full stored name, so the
    names carry the "<module>@<version>/" prefix; a name stored twice is hashed twice
    with the content of its last entry, as HashZip's name-to-file map does. Members
    are streamed. With `prefix` (e.g. "example.com/m@v1.2.3/"), a member outside it
    raises ZipError first, as modfetch.downloadZip checks before hashing. A member
    whose content does not match its CRC-32 or declared size raises ZipError.
    """
    with _open_zip(source) as archive:
        infos = archive.infolist()
        names = [_member_name(info) for info in infos]
        if prefix is not None:
            for name in names:
                if not name.startswith(prefix):
                    raise ZipError(f"unexpected file: not under {_quote(prefix)}", name)
        last = dict(zip(names, infos, strict=True))
        return hash_lines((name, _opener(archive, last[name])) for name in names)


def check_zip(source: ZipSource, module: str, version: str) -> ZipCheck:
    """Check a module zip as the go command does before it trusts one (zip.checkZip).

    The rules (golang.org/x/mod/zip package documentation): the zip itself is at most
    MaxZipFile bytes; every member is under "<module>@<version>/"; each name after the
    prefix is clean and a valid file path (module.CheckFilePath); no two names are
    equal under Unicode case folding, nor is one both a file and a directory; a go.mod
    may only be the lower-case "go.mod" at the module root; the declared uncompressed
    sizes total at most MaxZipFile, a root go.mod and LICENSE at most 16 MiB each.
    Only methods Store and Deflate are readable by Go. As in checkZip, a size error
    wins over a bad member, else the first bad member is reported.

    The module path and version are taken as already validated (by the protocol
    layer): this checks the zip's contents, not the request that named them.
    Declared sizes are checked here; actual sizes and CRCs are checked when the
    members are read, which `hash_zip` does.
    """
    size_error = _zip_size_error(source)
    if size_error:
        raise ZipError(size_error)
    prefix = f"{module}@{version}/"
    with _open_zip(source) as archive:
        scan = _Scan(prefix)
        for info in archive.infolist():
            scan.add(info)
        scan.raise_first_error()
        gomod = _read_gomod(archive, scan.gomod) if scan.gomod else None
        return ZipCheck(files=tuple(scan.valid), size=scan.size, gomod=gomod)


def check_file_path(path: str) -> None:
    """Raise ValueError unless `path` is a valid file path in a module (module.CheckFilePath).

    A valid path is non-empty, valid UTF-8, has no empty element (so no leading,
    trailing or double slash), and every element is not all dots, does not end in a
    dot, uses only Unicode letters, ASCII digits, space and "!#$%&()+,-.=@[]^_{}~",
    and is not a Windows reserved name (CON, com1, NuL.txt, ...).
    """
    reason = _file_path_reason(path)
    if reason:
        raise ValueError(f"malformed file path {_quote(path)}: {reason}")


class _Scan:
    """The per-member pass of zip.checkZip, collecting errors in Go's precedence."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.valid: list[str] = []
        self.size = 0
        self.gomod: zipfile.ZipInfo | None = None
        self.size_error: str | None = None
        self.invalid: ZipError | None = None
        self._seen: dict[str, tuple[str, bool]] = {}

    def add(self, info: zipfile.ZipInfo) -> None:
        """Check one member; remember the first bad one instead of stopping, as Go does."""
        member = _member_name(info)
        try:
            self._check(info, member)
        except ValueError as e:
            self.invalid = self.invalid or ZipError(str(e), member)

    def raise_first_error(self) -> None:
        """Raise the error checkZip would return: a size error first, else the first bad member."""
        if self.size_error:
            raise ZipError(self.size_error)
        if self.invalid:
            raise self.invalid

    def _check(self, info: zipfile.ZipInfo, member: str) -> None:
        if not member.startswith(self.prefix):
            raise ValueError(f"path does not have prefix {_quote(self.prefix)}")
        name = member[len(self.prefix) :]
        if not name:
            return
        is_dir = name.endswith("/")
        name = name.removesuffix("/") if is_dir else name
        if _go_clean(name) != name:
            raise ValueError("file path is not clean")
        check_file_path(name)
        self._check_collision(name, is_dir)
        if not is_dir:
            self._check_file(info, member, name)

    def _check_file(self, info: zipfile.ZipInfo, member: str, name: str) -> None:
        base = posixpath.basename(name)
        if _fold(base) == "go.mod" and base != name:
            raise ValueError("go.mod file not in module root directory")
        if _fold(base) == "go.mod" and name != "go.mod":
            raise ValueError("go.mod files must have lowercase names")
        if MAX_ZIP_FILE - self.size >= info.file_size:
            self.size += info.file_size
        elif self.size_error is None:
            self.size_error = (
                "total uncompressed size of module contents too large "
                f"(max size is {MAX_ZIP_FILE} bytes)"
            )
        if name == "go.mod" and info.file_size > MAX_GO_MOD:
            raise ValueError(f"go.mod file too large (max size is {MAX_GO_MOD} bytes)")
        if name == "LICENSE" and info.file_size > MAX_LICENSE:
            raise ValueError(f"LICENSE file too large (max size is {MAX_LICENSE} bytes)")
        if info.compress_type not in _METHODS:
            raise ValueError(f"unsupported compression method {info.compress_type}")
        self.gomod = info if name == "go.mod" else self.gomod
        self.valid.append(member)

    def _check_collision(self, path: str, is_dir: bool) -> None:
        """zip.collisionChecker.check: this path and each parent directory, case-folded.

        Go recurses once per parent; a loop here, since a member may be thousands of
        directories deep (CheckFilePath sets no limit) and Python's stack is not Go's."""
        while path:
            fold = _fold(path)
            other = self._seen.get(fold)
            if other is None:
                self._seen[fold] = (path, is_dir)
            elif other[0] != path:
                raise ValueError(
                    f"case-insensitive file name collision: {_quote(other[0])} and {_quote(path)}"
                )
            elif other[1] != is_dir:
                raise ValueError(f"entry {_quote(path)} is both a file and a directory")
            elif not is_dir:
                raise ValueError(f"multiple entries for file {_quote(path)}")
            path, is_dir = posixpath.dirname(path), True


@contextmanager
def _open_zip(source: ZipSource) -> Iterator[zipfile.ZipFile]:
    """Open a zip for reading; any failure to parse or read it becomes a ZipError."""
    try:
        with zipfile.ZipFile(source) as archive:
            yield archive
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise ZipError(f"not a readable zip file: {e}") from e
    except UnicodeDecodeError as e:
        raise ZipError(f"member name marked UTF-8 is not: {e}") from e
    except OSError as e:
        if e.errno != errno.EINVAL:  # a disk that fails is not the zip's fault
            raise
        # A seek before the start of the file: an offset in the zip points nowhere.
        raise ZipError(f"not a readable zip file: an offset points outside it ({e})") from e


def _zip_size_error(source: ZipSource) -> str | None:
    """The zip file itself may be at most MaxZipFile bytes (zip.checkZip)."""
    if isinstance(source, str | os.PathLike):
        size = os.stat(source).st_size
    else:
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
    if size > MAX_ZIP_FILE:
        return f"module zip file is too large ({size} bytes; limit is {MAX_ZIP_FILE} bytes)"
    return None


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as Go sees it: its stored bytes, decoded as UTF-8.

    Go's archive/zip keeps the raw bytes whatever the UTF-8 flag says; Python decodes
    unflagged names as CP437, which round-trips to those bytes. Bytes that are not
    UTF-8 survive as surrogate escapes, so hashing reproduces them exactly.
    """
    if info.flag_bits & _UTF8_FLAG:
        return info.orig_filename
    return info.orig_filename.encode("cp437").decode("utf-8", "surrogateescape")


def _opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    """A callable that opens one member, refusing methods Go cannot read."""

    def open_member() -> IO[bytes]:
        if info.compress_type not in _METHODS:
            method = info.compress_type
            raise ZipError(f"unsupported compression method {method}", _member_name(info))
        return _open_member(archive, info)

    return open_member


def _read_gomod(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """Read the root go.mod, whose declared size was already checked against MaxGoMod."""
    with _open_member(archive, info) as stream:
        return stream.read()


def _open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """Open a member as Go's archive/zip does: it never looks at the encryption flags
    (bits 0, 5 and 6), so it reads the stored bytes with the member's method, and the
    CRC-32 then refuses what was really encrypted. Python's zipfile would raise
    RuntimeError or NotImplementedError instead, which no caller expects."""
    if info.flag_bits & _ENCRYPTION_FLAGS:
        info = copy.copy(info)
        info.flag_bits &= ~_ENCRYPTION_FLAGS
    return archive.open(info)


def _sha256_hex(content: Content) -> str:
    """The hex SHA-256 of a file's content, streamed when it comes as an opener."""
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    digest = hashlib.sha256()
    with content() as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _name_bytes(name: str) -> bytes:
    """A file name as the bytes Go sorts and hashes (raw bytes kept as surrogate escapes)."""
    return name.encode("utf-8", "surrogateescape")


def _quote(text: str) -> str:
    """Quote a name for a one-line message, escaping newlines and odd characters."""
    return json.dumps(text)


def _go_clean(path: str) -> str:
    """Go's path.Clean, which unlike POSIX normpath also collapses a leading "//"."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _fold(text: str) -> str:
    """A key equal for two strings iff Go's strings.EqualFold says they are (zip.strToFold)."""
    if text.isascii():
        return text.lower()
    return "".join(_fold_char(char) for char in text)


@functools.cache
def _fold_char(char: str) -> str:
    """The smallest character in `char`'s simple case-folding orbit, A-Z lowered.

    Go walks unicode.SimpleFold; the orbit is rebuilt here from Python's
    one-character upper- and lower-case mappings (e.g. k, K and the Kelvin sign).
    """
    orbit, todo = {char}, [char]
    while todo:
        current = todo.pop()
        for mapped in (current.lower(), current.upper()):
            if len(mapped) == 1 and mapped not in orbit:
                orbit.add(mapped)
                todo.append(mapped)
    smallest = min(orbit)
    return smallest.lower() if "A" <= smallest <= "Z" else smallest


# module.badWindowsNames: reserved on Windows whatever the case or extension.
_WINDOWS_NAMES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{d}{n}" for d in ("com", "lpt") for n in range(1, 10)]
)
# module.fileNameOK: the ASCII punctuation allowed in a file name element.
_FILE_PUNCTUATION = frozenset("!#$%&()+,-.=@[]^_{}~ ")


def _file_path_reason(path: str) -> str | None:
    """Why module.checkPath(path, filePath) rejects `path`, or None if it is valid."""
    if any("\ud800" <= char <= "\udfff" for char in path):
        return "invalid UTF-8"
    if not path:
        return "empty string"
    if "//" in path:
        return "double slash"
    if path.endswith("/"):
        return "trailing slash"
    for elem in path.split("/"):
        reason = _elem_reason(elem)
        if reason:
            return reason
    return None


def _elem_reason(elem: str) -> str | None:
    """Why module.checkElem(elem, filePath) rejects one path element, or None."""
    if not elem:
        return "empty path element"
    if elem.count(".") == len(elem):
        return f"invalid path element {_quote(elem)}"
    if elem.endswith("."):
        return "trailing dot in path element"
    for char in elem:
        if not _file_char_ok(char):
            return f"invalid char {char!r}"
    short = elem.split(".", 1)[0]
    if _fold(short) in _WINDOWS_NAMES:
        return f"{_quote(short)} disallowed as path element component on Windows"
    return None


def _file_char_ok(char: str) -> bool:
    """module.fileNameOK: ASCII letters, digits, some punctuation, or any Unicode letter."""
    if char.isascii():
        return char.isalnum() or char in _FILE_PUNCTUATION
    return char.isalpha()
