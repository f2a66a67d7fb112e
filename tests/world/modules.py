"""Fixture builder: module versions, a world of them, and the proxy tree they make.

A `ModuleVersion` is everything a GOPROXY serves for one version (go.mod, .info,
zip) plus its go.sum hashes; a `World` holds many and lays them out as a proxy
would; `graph()` builds a realistic world of inter-dependent modules and
`write_main_module()` a main module that builds against it.

    world = World([ModuleVersion("example.modgate.test/a", "v1.0.0")])
    world.write_proxy_tree(tmp_path / "proxy")   # GOPROXY=file://…/proxy
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import IO

from modgate.dirhash import Content, hash_gomod, hash_lines

DOMAIN = "example.modgate.test"
DEFAULT_TIME = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
PAYLOAD_NAME = "payload.bin"

_BLOCK = 1 << 16
# module/pseudo.go: pseudoVersionRE.
_PSEUDO = re.compile(
    r"^v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)\d{14}-[A-Za-z0-9]+(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
_SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$"
)


class ModuleVersion:
    """One module version as a proxy serves it: go.mod, .info, zip and go.sum hashes.

    `files` maps paths inside the module to contents; None gives a Go package at the
    module root with `Hello()` (naming this version) and, when there are requires,
    `Deps()` calling each required module's root package. A "go.mod" in `files`
    replaces the generated one. `payload_bytes` adds an incompressible
    pseudo-random file, generated while streaming, never held whole in memory.
    """

    def __init__(
        self,
        path: str,
        version: str,
        files: Mapping[str, str | bytes] | None = None,
        requires: Sequence[tuple[str, str]] = (),
        go: str = "1.21",
        time: datetime = DEFAULT_TIME,
        payload_bytes: int = 0,
    ) -> None:
        semver_key(version)  # reject what no proxy could serve
        self.path = path
        self.version = version
        self.requires = tuple(requires)
        self.go = go
        self.time = time
        self.payload_bytes = payload_bytes
        given = dict(default_files(path, version, self.requires) if files is None else files)
        self._gomod_override = _as_bytes(given.pop("go.mod")) if "go.mod" in given else None
        self.files: dict[str, bytes] = {name: _as_bytes(data) for name, data in given.items()}

    def __repr__(self) -> str:
        return f"ModuleVersion({self.id!r})"

    @property
    def id(self) -> str:
        """The "<path>@<version>" the go command prints."""
        return f"{self.path}@{self.version}"

    @property
    def prefix(self) -> str:
        """The directory every zip member sits in: "<path>@<version>/"."""
        return f"{self.id}/"

    @cached_property
    def gomod(self) -> bytes:
        """The go.mod file: module line, go directive, require block."""
        if self._gomod_override is not None:
            return self._gomod_override
        text = f"module {self.path}\n\ngo {self.go}\n"
        if self.requires:
            lines = "".join(f"\t{path} {version}\n" for path, version in self.requires)
            text += f"\nrequire (\n{lines})\n"
        return text.encode()

    @cached_property
    def info(self) -> bytes:
        """The .info JSON, compact as proxies send it: {"Version":…,"Time":RFC 3339 UTC}."""
        stamp = self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps({"Version": self.version, "Time": stamp}, separators=(",", ":")).encode()

    @cached_property
    def gomod_hash(self) -> str:
        """The go.sum hash of the go.mod ("<path> <version>/go.mod h1:…")."""
        return hash_gomod(self.gomod)

    @cached_property
    def zip_hash(self) -> str:
        """The go.sum hash of the zip, computed from the members (payload streamed)."""
        return hash_lines(self.members())

    def gosum_lines(self) -> list[str]:
        """The two go.sum lines for this version."""
        return [
            f"{self.path} {self.version} {self.zip_hash}",
            f"{self.path} {self.version}/go.mod {self.gomod_hash}",
        ]

    def members(self) -> list[tuple[str, Content]]:
        """Zip member names (with prefix) and contents, sorted by name."""
        members: dict[str, Content] = {self.prefix + "go.mod": self.gomod}
        members.update({self.prefix + name: data for name, data in self.files.items()})
        if self.payload_bytes:
            members[self.prefix + PAYLOAD_NAME] = self._open_payload
        return sorted(members.items())

    def write_zip(self, dest: Path | IO[bytes]) -> None:
        """Write the module zip, byte-for-byte the same on every call, streaming the payload."""
        with zipfile.ZipFile(dest, "w") as archive:
            for name, content in self.members():
                self._write_member(archive, name, content)

    def zip_bytes(self) -> bytes:
        """The module zip in memory (for small modules)."""
        buffer = io.BytesIO()
        self.write_zip(buffer)
        return buffer.getvalue()

    def _write_member(self, archive: zipfile.ZipFile, name: str, content: Content) -> None:
        info = zipfile.ZipInfo(name, date_time=_zip_time(self.time))
        info.create_system = 3
        info.external_attr = 0o644 << 16
        if isinstance(content, bytes):
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
            return
        info.compress_type = zipfile.ZIP_STORED  # incompressible: deflate would only cost time
        info.file_size = self.payload_bytes  # lets zipfile choose zip64 up front
        with content() as source, archive.open(info, "w") as target:
            shutil.copyfileobj(source, target, _BLOCK * 16)

    def _open_payload(self) -> IO[bytes]:
        return io.BufferedReader(PayloadReader(self.id, self.payload_bytes), _BLOCK)


class PayloadReader(io.RawIOBase):
    """A deterministic stream of pseudo-random bytes, made block by block as it is read."""

    def __init__(self, seed: str, size: int) -> None:
        self._random = random.Random(seed)
        self._left = size
        self._block = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._block and self._left:
            self._block = self._random.randbytes(min(_BLOCK, self._left))
            self._left -= len(self._block)
        count = min(len(buffer), len(self._block))
        buffer[:count] = self._block[:count]
        self._block = self._block[count:]
        return count


class World:
    """Many module versions, laid out and hashed as a module proxy would.

    Zips are written on first use into `workdir` (a temporary directory removed by
    `close()` when none is given), in the proxy's on-disk layout, so servers stream
    them from disk. Safe to read from several threads.
    """

    def __init__(self, versions: Iterable[ModuleVersion] = (), workdir: Path | None = None) -> None:
        self._versions: dict[tuple[str, str], ModuleVersion] = {}
        self._workdir = workdir
        self._own_workdir = workdir is None
        self._lock = threading.Lock()  # guards _versions
        self._zip_lock = threading.Lock()  # one zip written at a time, readers not blocked
        self.add(*versions)

    def __enter__(self) -> World:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[ModuleVersion]:
        for module in self.modules():
            yield from self.versions(module)

    def __len__(self) -> int:
        return len(self._versions)

    def add(self, *versions: ModuleVersion) -> None:
        """Publish versions (replacing any with the same path and version)."""
        with self._lock:
            for mv in versions:
                self._versions[mv.path, mv.version] = mv

    def get(self, module: str, version: str) -> ModuleVersion:
        """The version `module@version`; KeyError if the world has none."""
        return self._versions[module, version]

    def modules(self) -> list[str]:
        """Every module path, sorted."""
        return sorted({mv.path for mv in self._snapshot()})

    def versions(self, module: str) -> list[ModuleVersion]:
        """Every version of `module` (pseudo-versions too), in semver order."""
        found = [mv for mv in self._snapshot() if mv.path == module]
        return sorted(found, key=lambda mv: semver_key(mv.version))

    def list_versions(self, module: str) -> list[str]:
        """What `$module/@v/list` holds: tagged versions, no pseudo-versions, semver order."""
        return [mv.version for mv in self.versions(module) if not is_pseudo(mv.version)]

    def latest(self, module: str) -> ModuleVersion:
        """What `$module/@latest` names: the highest release, else prerelease, else pseudo.

        KeyError if the world has no version of `module`.
        """
        candidates = self.versions(module)
        if not candidates:
            raise KeyError(module)
        return max(candidates, key=_latest_key)

    def gosum_lines(self) -> list[str]:
        """The go.sum lines of every version, sorted."""
        return sorted(line for mv in self for line in mv.gosum_lines())

    def zip_path(self, mv: ModuleVersion) -> Path:
        """The module zip on disk, written on first request."""
        with self._zip_lock:
            target = self.workdir / proxy_path(mv.path, mv.version, ".zip")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(".tmp")
                mv.write_zip(partial)
                partial.replace(target)
        return target

    @property
    def workdir(self) -> Path:
        """Where zips are written; created on first use."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="modgate-world-"))
        return self._workdir

    def write_proxy_tree(self, dest: Path) -> Path:
        """Lay every module out as a GOPROXY directory, usable as GOPROXY=file://<dest>.

        The layout of the GOPROXY protocol: $module/@v/list, $module/@v/$version.info,
        .mod and .zip, and $module/@latest, with paths and versions `!`-escaped.
        """
        for module in self.modules():
            root = dest / escape(module)
            (root / "@v").mkdir(parents=True, exist_ok=True)
            (root / "@v" / "list").write_text(_list_text(self.list_versions(module)))
            (root / "@latest").write_bytes(self.latest(module).info)
            for mv in self.versions(module):
                (dest / proxy_path(module, mv.version, ".info")).write_bytes(mv.info)
                (dest / proxy_path(module, mv.version, ".mod")).write_bytes(mv.gomod)
                mv.write_zip(dest / proxy_path(module, mv.version, ".zip"))
        return dest

    def _snapshot(self) -> list[ModuleVersion]:
        with self._lock:
            return list(self._versions.values())

    def close(self) -> None:
        """Remove the zips this world wrote, if it made its own workdir."""
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


@dataclass(frozen=True)
class MainModule:
    """A main module written by `write_main_module`.

    `expected_output` is what the built program prints (to stderr, via println).
    """

    dir: Path
    path: str
    requires: tuple[tuple[str, str], ...]
    expected_output: str


def write_main_module(
    world: World,
    dest: Path,
    imports: Sequence[str] | None = None,
    path: str = f"{DOMAIN}/app",
) -> MainModule:
    """Write go.mod and main.go of a program importing the root package of `imports`.

    Each imported module is required at its latest version; the program prints each
    one's Hello(). None imports the roots of `graph()` (see `graph_roots`).
    """
    modules = list(graph_roots(world) if imports is None else imports)
    requires = tuple((module, world.latest(module).version) for module in modules)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "go.mod").write_text(
        f"module {path}\n\ngo 1.21\n\nrequire (\n"
        + "".join(f"\t{module} {version}\n" for module, version in requires)
        + ")\n"
    )
    aliases = [f"m{i}" for i in range(len(modules))]
    imported = "".join(f'\t{a} "{m}"\n' for a, m in zip(aliases, modules, strict=True))
    calls = "".join(f"\tprintln({alias}.Hello())\n" for alias in aliases)
    (dest / "main.go").write_text(
        f"package main\n\nimport (\n{imported})\n\nfunc main() {{\n{calls}}}\n"
    )
    output = "".join(f"{module}@{version}\n" for module, version in requires)
    return MainModule(dir=dest, path=path, requires=requires, expected_output=output)


_WORDS = (
    *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"),
    *("juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"),
    *("sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"),
)
_RELEASES = ("v1.0.0", "v1.1.0", "v1.2.0", "v1.2.1")
UPPER = f"{DOMAIN}/Upper/Case"
MAJOR_V2 = f"{DOMAIN}/twin/v2"
BULK = f"{DOMAIN}/bulk"


def graph(n_modules: int = 24, workdir: Path | None = None, payload_bytes: int = 0) -> World:
    """A realistic world: `n_modules` modules that require one another.

    Module i has 4 - i % 4 releases (from v1.0.0 up to v1.2.1) and requires modules
    i+1 and i+3; newer releases require newer releases of their dependencies, so MVS
    reads several go.mod files of some modules. Among them: `UPPER` (an uppercase
    path, served `!`-escaped, releases v1.0.0 to v1.2.1), `MAJOR_V2` (a /v2 module),
    one module with a prerelease above its releases and one with a pseudo-version.
    `payload_bytes` adds the module `BULK` v1.0.0 with a payload that large
    (required by nothing).
    """
    if not 6 <= n_modules <= len(_WORDS) + 2:
        raise ValueError(f"n_modules must be between 6 and {len(_WORDS) + 2}")
    paths = _graph_paths(n_modules)
    releases = [_graph_releases(path, i) for i, path in enumerate(paths)]
    world = World(workdir=workdir)
    for i, path in enumerate(paths):
        deps = [j for j in (i + 1, i + 3) if j < n_modules]
        for k, version in enumerate(releases[i]):
            requires = [(paths[j], releases[j][min(k, len(releases[j]) - 1)]) for j in deps]
            world.add(ModuleVersion(path, version, requires=requires, time=_stamp(i, k)))
    _add_extras(world, paths)
    if payload_bytes:
        world.add(ModuleVersion(BULK, "v1.0.0", payload_bytes=payload_bytes))
    return world


def graph_roots(world: World) -> list[str]:
    """The modules a main module imports so that it builds all of a `graph()`."""
    first = f"{DOMAIN}/{_WORDS[0]}"
    return [m for m in (first, UPPER, MAJOR_V2) if m in world.modules()]


def _graph_paths(n_modules: int) -> list[str]:
    words = _WORDS[: n_modules - 2]
    paths = [f"{DOMAIN}/lib/{w}" if i % 5 == 2 else f"{DOMAIN}/{w}" for i, w in enumerate(words)]
    return [*paths, MAJOR_V2, UPPER]


def _graph_releases(path: str, index: int) -> list[str]:
    if path == MAJOR_V2:
        return ["v2.0.0", "v2.1.0"]
    if path == UPPER:
        return list(_RELEASES)
    return list(_RELEASES[: 4 - index % 4])


def _add_extras(world: World, paths: list[str]) -> None:
    """A prerelease above the releases of one module and a pseudo-version of another."""
    pre, pseudo = paths[3], paths[4]
    world.add(ModuleVersion(pre, "v1.3.0-rc.1", time=_stamp(3, 9)))
    stamp = _stamp(4, 9)
    revision = f"v1.0.1-0.{stamp:%Y%m%d%H%M%S}-0123456789ab"
    world.add(ModuleVersion(pseudo, revision, time=stamp))


def _stamp(module_index: int, version_index: int) -> datetime:
    return DEFAULT_TIME + timedelta(days=30 * version_index, hours=module_index)


def default_files(
    path: str, version: str, requires: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """The default package of a module: Hello() names the version, Deps() calls requires."""
    name = package_name(path)
    code = f"// Package {name} is a module of the modgate test world.\npackage {name}\n"
    if requires:
        imports = "".join(f'\td{i} "{dep}"\n' for i, (dep, _) in enumerate(requires))
        code += f"\nimport (\n{imports})\n"
    code += _HELLO.format(id=f"{path}@{version}")
    if requires:
        code += _DEPS.format(calls=", ".join(f"d{i}.Hello()" for i in range(len(requires))))
    return {f"{name}.go": code}


_HELLO = """
// Hello names this module version.
func Hello() string {{ return "{id}" }}
"""
_DEPS = """
// Deps names the versions of the required modules it was built with.
func Deps() []string {{ return []string{{{calls}}} }}
"""


def package_name(path: str) -> str:
    """A Go package name for a module path: its last element that is not a /vN suffix."""
    elems = [e for e in path.split("/") if not re.fullmatch(r"v\d+", e)]
    name = re.sub(r"[^a-z0-9]", "", elems[-1].lower()).lstrip("0123456789")
    return f"pkg{name}" if not name or name in _GO_KEYWORDS else name


_GO_KEYWORDS = frozenset(
    ("break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough")
    + ("for", "func", "go", "goto", "if", "import", "interface", "map", "package", "range")
    + ("return", "select", "struct", "switch", "type", "var")
)


def escape(text: str) -> str:
    """The GOPROXY protocol's case encoding: each uppercase letter becomes "!" + lowercase."""
    if "!" in text:
        raise ValueError(f"{text!r} contains '!'")
    return re.sub(r"[A-Z]", lambda m: "!" + m.group().lower(), text)


def proxy_path(module: str, version: str, suffix: str) -> str:
    """The relative URL or file path of a version's file: "$module/@v/$version<suffix>"."""
    return f"{escape(module)}/@v/{escape(version)}{suffix}"


def is_pseudo(version: str) -> bool:
    """Whether `version` is a pseudo-version (module/pseudo.go's pattern)."""
    return _PSEUDO.match(version) is not None


def semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """A sort key following semver precedence, as golang.org/x/mod/semver.Compare.

    A release sorts above its prereleases; prerelease identifiers compare numerically
    when numeric (and below alphanumeric ones), else lexically. Build metadata is
    ignored. ValueError for a version that is not canonical-looking semver.
    """
    match = _SEMVER.match(version)
    if not match:
        raise ValueError(f"{version!r} is not a semantic version")
    major, minor, patch, pre, _build = match.groups()
    idents = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")) if pre else ()
    return int(major), int(minor), int(patch), 0 if pre else 1, idents


def _latest_key(mv: ModuleVersion) -> tuple[int, tuple[object, ...]]:
    pseudo = is_pseudo(mv.version)
    release = "-" not in mv.version.split("+")[0]
    rank = 2 if release and not pseudo else 0 if pseudo else 1
    return rank, semver_key(mv.version)


def _list_text(versions: Sequence[str]) -> str:
    return "".join(f"{v}\n" for v in versions)


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    t = moment.astimezone(UTC)
    return t.year, t.month, t.day, t.hour, t.minute, t.second
