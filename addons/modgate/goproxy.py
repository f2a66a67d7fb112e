"""The GOPROXY protocol and the checksum-database proxy paths, as pure functions.

Follows the Go modules reference, section "GOPROXY protocol" (paths, `!` case
escaping, 404/410 meaning "not here"), section "Checksum database" (the
`<proxy>/sumdb/<name>/...` paths a proxy may serve), and golang.org/x/mod/module
(`UnescapePath`, `UnescapeVersion`, `CheckPath`, `CanonicalVersion`) for what a
valid module path and version are.

    parse_request("golang.org/x/text/@v/v0.3.2.mod")
    -> ModRequest(kind=Kind.MOD, module="golang.org/x/text", version="v0.3.2", ...)
"""

from __future__ import annotations

import enum
import json
import re
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from modgate import semver
from modgate.errors import ProtocolError


class Kind(enum.Enum):
    """What a request asks for; the values are the names traces and logs use."""

    LIST = "list"
    INFO = "info"
    MOD = "mod"
    ZIP = "zip"
    LATEST = "latest"
    SUMDB_SUPPORTED = "sumdb-supported"
    SUMDB_LOOKUP = "sumdb-lookup"
    SUMDB_TILE = "sumdb-tile"
    SUMDB_LATEST = "sumdb-latest"


CONTENT_TYPES = {
    Kind.LIST: "text/plain; charset=utf-8",
    Kind.INFO: "application/json",
    Kind.MOD: "text/plain; charset=utf-8",
    Kind.ZIP: "application/zip",
    Kind.LATEST: "application/json",
    Kind.SUMDB_SUPPORTED: "text/plain; charset=utf-8",
    Kind.SUMDB_LOOKUP: "text/plain; charset=utf-8",
    Kind.SUMDB_TILE: "application/octet-stream",
    Kind.SUMDB_LATEST: "text/plain; charset=utf-8",
}

# golang.org/x/mod/zip: MaxGoMod. A larger .mod is not something the go command accepts.
MAX_GOMOD = 16 << 20


@dataclass(frozen=True)
class ModRequest:
    """One parsed proxy request. `path` is the escaped path relative to the proxy base,
    identical for every client that asks the same thing (the cache key's tail)."""

    kind: Kind
    path: str
    module: str = ""
    version: str = ""
    sumdb: str = ""

    @property
    def immutable(self) -> bool:
        """Whether a 200 answer can never change ("GOPROXY protocol": a canonical
        version's .info, .mod and .zip are fixed; "Checksum database": records and
        tiles are append-only). `list`, `@latest`, queries such as `master` and the
        database's `latest` and `supported` change over time."""
        if self.kind in (Kind.MOD, Kind.ZIP, Kind.SUMDB_LOOKUP, Kind.SUMDB_TILE):
            return True
        if self.kind is Kind.INFO:
            return semver.canonical_module_version(self.version) == self.version
        return False

    @property
    def sumdb_path(self) -> str:
        """A checksum-database request's path below `sumdb/<name>/`, as the database's
        own URL serves it (`lookup/...`, `tile/...`, `latest`)."""
        return self.path.removeprefix(f"sumdb/{self.sumdb}/")

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.kind]

    @property
    def sum_version(self) -> str:
        """The version as a go.sum line names what this fetches: `v1.0.0` for the zip,
        `v1.0.0/go.mod` for the .mod ("Authenticating modules")."""
        return self.version + "/go.mod" if self.kind is Kind.MOD else self.version

    def __str__(self) -> str:
        if self.module and self.version:
            return f"{self.module}@{self.version} ({self.kind.value})"
        if self.module:
            return f"{self.module} ({self.kind.value})"
        return f"{self.path} ({self.kind.value})"


def parse_request(path: str, databases: Collection[str] = ()) -> ModRequest:
    """Parse a request path relative to the proxy's base URL (no leading slash, no query).

    `databases` are the checksum database names the caller knows: a database name may
    hold `/`, and `sumdb/<name>/...` is split at the longest one that fits.

    Raises ProtocolError(400) for a malformed module path or version and
    ProtocolError(404) for a path that is not part of the protocol.
    """
    if path.startswith("sumdb/"):
        return _parse_sumdb(path, databases)
    if path.endswith("/@latest"):
        module = unescape_path(path.removesuffix("/@latest"))
        return ModRequest(Kind.LATEST, f"{escape(module)}/@latest", module)
    escaped_module, sep, rest = path.partition("/@v/")
    if not sep:
        raise ProtocolError(f"not a module proxy path: /{path}", 404)
    module = unescape_path(escaped_module)
    if rest == "list":
        return ModRequest(Kind.LIST, f"{escape(module)}/@v/list", module)
    stem, dot, ext = rest.rpartition(".")
    kinds = {"info": Kind.INFO, "mod": Kind.MOD, "zip": Kind.ZIP}
    if not dot or ext not in kinds or "/" in stem:
        raise ProtocolError(f"not a module proxy path: /{path}", 404)
    version = unescape_version(stem)
    kind = kinds[ext]
    if kind is not Kind.INFO and semver.canonical_module_version(version) != version:
        # modfetch asks for .mod and .zip of canonical versions only (proxyRepo.GoMod/Zip).
        raise ProtocolError(f"{module}@{version}: .{ext} needs a canonical version", 404)
    return ModRequest(kind, f"{escape(module)}/@v/{escape(version)}.{ext}", module, version)


# A database name is "host[/path]" (modfetch dbDial: "https://<name>" must parse as a URL
# with nothing but a host and a path that needs no escaping, no trailing slash) and a
# note name (note.isValidName: no space, no '+'). Dot segments are refused too: no
# client needs them and they would climb out of <proxy>/sumdb/ on the way upstream.
_SUMDB_HOST = re.compile(r"([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]*)?")
_SUMDB_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*,;=:@-]+")
# golang.org/x/mod/sumdb/tlog: Tile.Path, "tile/H/L/NNN[.p/W]" with x-prefixed
# three-digit elements, L may be "data".
_TILE = re.compile(r"tile/[1-9][0-9]?/(data|[0-9]+)(/x[0-9]{3})*/[0-9]{3}(\.p/[1-9][0-9]*)?")


def is_sumdb_name(name: str) -> bool:
    """Whether the go command accepts `name` as a checksum database's name."""
    host, _, path = name.partition("/")
    if not _SUMDB_HOST.fullmatch(host):
        return False
    return not path or all(
        _SUMDB_SEGMENT.fullmatch(seg) and seg not in (".", "..") for seg in path.split("/")
    )


def _parse_sumdb(path: str, databases: Collection[str]) -> ModRequest:
    """The paths "Checksum database" lets a proxy serve: <proxy>/sumdb/<name>/<db path>,
    where go builds <db path> as golang.org/x/mod/sumdb/client.go does: `supported`
    (the proxy's own), `latest`, `lookup/<module>@<version>`, `tile/...`.

    A name may hold `/` (cmd/go's test database is `localhost.localdev/sumdb`), so the
    name ends where the rest is a database path: at the longest known name, else at the
    first `/` after which the rest parses (a module path in a lookup must be valid)."""
    below = path.removeprefix("sumdb/")
    known = [n for n in databases if below.startswith(n + "/")]
    if known:
        name = max(known, key=len)
        return _parse_db_path(path, name, below[len(name) + 1 :])
    first: ProtocolError | None = None
    for i, c in enumerate(below):
        if c != "/" or not is_sumdb_name(below[:i]):
            continue
        try:
            return _parse_db_path(path, below[:i], below[i + 1 :])
        except ProtocolError as e:
            first = first or e
    if first is None:
        raise ProtocolError(f"not a checksum database name: /{path}", 404)
    raise first


def _parse_db_path(path: str, name: str, rest: str) -> ModRequest:
    if rest == "supported":
        return ModRequest(Kind.SUMDB_SUPPORTED, path, sumdb=name)
    if rest == "latest":
        return ModRequest(Kind.SUMDB_LATEST, path, sumdb=name)
    if rest.startswith("lookup/"):
        escaped_module, at, escaped_version = rest.removeprefix("lookup/").rpartition("@")
        if not at:
            raise ProtocolError(f"checksum database lookup needs module@version: /{path}", 400)
        module, version = unescape_path(escaped_module), unescape_version(escaped_version)
        return ModRequest(Kind.SUMDB_LOOKUP, path, module, version, sumdb=name)
    if _TILE.fullmatch(rest):
        return ModRequest(Kind.SUMDB_TILE, path, sumdb=name)
    raise ProtocolError(f"not a checksum database path: /{path}", 404)


# --- golang.org/x/mod/module: escaping and path checks ---------------------------------

_BAD_WINDOWS_NAMES = {
    "CON", "PRN", "AUX", "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}  # fmt: skip
_MOD_PATH_CHARS = re.compile(r"[A-Za-z0-9._~-]*")
_FILE_NAME_CHARS = re.compile(r"[A-Za-z0-9!#$%&()+,\-.=@\[\]^_{}~ ]*")


def escape(s: str) -> str:
    """EscapePath/EscapeVersion: each uppercase letter becomes `!` and its lowercase."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), s)


def _unescape(escaped: str) -> str | None:
    """unescapeString: the inverse of escape, None where `escaped` is not in escaped form."""
    if not escaped.isascii() or re.search(r"[A-Z]|![^a-z]|!$", escaped):
        return None
    return re.sub(r"!([a-z])", lambda m: m.group(1).upper(), escaped)


def unescape_path(escaped: str) -> str:
    """module.UnescapePath: decode `!` escaping, then check it is a valid module path."""
    path = _unescape(escaped)
    if path is None:
        raise ProtocolError(f"invalid escaped module path {escaped!r}")
    problem = check_module_path(path)
    if problem:
        raise ProtocolError(f"invalid escaped module path {escaped!r}: {problem}")
    return path


def unescape_version(escaped: str) -> str:
    """module.UnescapeVersion: decode `!` escaping, then check it as a file-name element."""
    version = _unescape(escaped)
    if version is None:
        raise ProtocolError(f"invalid escaped version {escaped!r}")
    problem = _check_elem(version, file_name=True)
    if problem:
        raise ProtocolError(f"invalid escaped version {version!r}: {problem}")
    return version


def check_module_path(path: str) -> str:
    """module.CheckPath; returns the problem, or "" when `path` is a valid module path."""
    if not path:
        return "empty string"
    if path[0] == "-":
        return "leading dash"
    if "//" in path:
        return "double slash"
    if path[-1] == "/":
        return "trailing slash"
    for elem in path.split("/"):
        problem = _check_elem(elem, file_name=False)
        if problem:
            return problem
    first = path.split("/", 1)[0]
    if "." not in first:
        return "missing dot in first path element"
    if not re.fullmatch(r"[a-z0-9.-]+", first):
        return "invalid char in first path element"
    if not _path_major_ok(path):
        return "invalid version"
    return ""


def _check_elem(elem: str, *, file_name: bool) -> str:
    """module.checkElem for module paths (file_name=False) and versions (file_name=True)."""
    if not elem:
        return "empty path element"
    if elem.count(".") == len(elem):
        return f"invalid path element {elem!r}"
    if elem[0] == "." and not file_name:
        return "leading dot in path element"
    if elem[-1] == ".":
        return "trailing dot in path element"
    chars = _FILE_NAME_CHARS if file_name else _MOD_PATH_CHARS
    if not chars.fullmatch(elem):
        bad = next(c for c in elem if not chars.fullmatch(c))
        return f"invalid char {bad!r}"
    short = elem.split(".", 1)[0]
    if short.upper() in _BAD_WINDOWS_NAMES:
        return f"{short!r} disallowed as path element component on Windows"
    if not file_name and re.search(r"~[0-9]+$", short):
        return "trailing tilde and digits in path element"
    return ""


def _path_major_ok(path: str) -> bool:
    """module.SplitPathVersion's check on a trailing /vN (N >= 2, no leading zero) and
    gopkg.in's .vN suffix."""
    if path.startswith("gopkg.in/"):
        return re.search(r"\.v(0|[1-9][0-9]*)(-unstable)?$", path) is not None
    last = path.rsplit("/", 1)[-1]
    if re.fullmatch(r"v[0-9.]+", last) and "/" in path:
        return re.fullmatch(r"v([2-9]|[1-9][0-9]+)", last) is not None
    return True


# --- well-formed answers --------------------------------------------------------------


def check_body(req: ModRequest, body: Path) -> None:
    """Refuse an upstream 200 answer that cannot be what the protocol says it is, so a
    truncated or garbled answer is never cached. Raises ProtocolError with the reason."""
    size = body.stat().st_size
    match req.kind:
        case Kind.INFO | Kind.LATEST:
            _check_info(req, body.read_bytes())
        case Kind.LIST:
            _check_text(req, body.read_bytes())
        case Kind.MOD:
            if size > MAX_GOMOD:
                raise ProtocolError(f"{req}: go.mod is {size} bytes, over the {MAX_GOMOD} limit")
            _check_text(req, body.read_bytes())
        case Kind.ZIP:
            _check_zip(req, body)
        case Kind.SUMDB_TILE:
            if size == 0:
                raise ProtocolError(f"{req}: empty tile")
        case Kind.SUMDB_SUPPORTED | Kind.SUMDB_LOOKUP | Kind.SUMDB_LATEST:
            pass


def _check_text(req: ModRequest, data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"{req}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def _check_info(req: ModRequest, data: bytes) -> None:
    """ "GOPROXY protocol": .info and @latest are a JSON object whose Version is canonical."""
    try:
        info = json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"{req}: answer is not JSON ({e})") from e
    except RecursionError as e:
        # Python's decoder recurses per level (Go's stops at 10000): no .info nests at all.
        raise ProtocolError(f"{req}: answer is JSON nested too deeply to read") from e
    version = info.get("Version") if isinstance(info, dict) else None
    if not isinstance(version, str) or not semver.is_valid(version):
        raise ProtocolError(f"{req}: answer has no valid Version field")


def _check_zip(req: ModRequest, body: Path) -> None:
    """A zip whose central directory reads and whose entries sit under `module@version/`
    ("Module zip files"). A truncated download loses the central directory at the end."""
    prefix = f"{req.module}@{req.version}/"
    try:
        with zipfile.ZipFile(body) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        # NotImplementedError: a "version needed to extract" above what zipfile reads.
        raise ProtocolError(f"{req}: not a readable zip file ({e})") from e
    outside = next((n for n in names if not n.startswith(prefix)), None)
    if outside is not None:
        raise ProtocolError(f"{req}: zip entry {outside!r} is outside {prefix!r}")
