"""cmd/go's own module proxy fixtures, served as cmd/go's proxy_test.go serves them.

`$GOROOT/src/cmd/go/testdata/mod` holds one txtar file per module version
(`path_vers.txt`, slashes as underscores, `!`-escaped). proxy_test.go serves them:

- `.info` and `.mod` are the archive's files of those names (404 if absent);
- the zip holds every other file but `.zip`, named `path@vers/<name>`, or `<name>`
  without its leading `/` for names that start with one (how fixtures put files
  outside the module on purpose), written in archive order, deflated;
- `list` names every version of the path that is not a pseudo-version and passes
  module.Check; `@latest` is the newest release, else prerelease, else pseudo-version;
- a checksum database named `localhost.localdev/sumdb`, signed with proxy_test.go's
  `testSumDBSignerKey`, holding for every version the hashes of `proxyGoSum`: the h1
  of the archive's files whose names do not start with `.`, as `path@vers/<name>`
  (so a fixture whose zip differs from that, on purpose, has a wrong hash), and the
  h1 of `.mod`; records are logged in file name order, as StartProxy's lookups do.

    fixtures = CmdGoFixtures.load(tmp_path / "tree")
    with Upstream(fixtures.tree, sumdb=fixtures.sumdb) as up:
        env = go_env(tmp_path, up.url, GOSUMDB=fixtures.verifier_key)

Versions whose file names do not unescape are skipped, as readModList skips them
(example.com/invalidpath/v1 is one, on purpose).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from modgate import semver
from modgate.errors import ProtocolError
from modgate.goproxy import escape, unescape_path, unescape_version

from .gocmd import find_go
from .sumdb import TestSumdb

PROXY_TEST = Path("src/cmd/go/proxy_test.go")
FIXTURES = Path("src/cmd/go/testdata/mod")
SUMDB_NAME = "localhost.localdev/sumdb"


def goroot() -> Path:
    out = subprocess.run([find_go(), "env", "GOROOT"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def test_keys(root: Path) -> tuple[str, str]:
    """(verifier key, signer key) of cmd/go's test checksum database, from proxy_test.go."""
    text = (root / PROXY_TEST).read_text()
    keys = dict(re.findall(r'(testSumDB(?:Verifier|Signer)Key)\s*=\s*"([^"]+)"', text))
    return keys["testSumDBVerifierKey"], keys["testSumDBSignerKey"]


# --- txtar (cmd/go/internal/txtar, internal/txtar) ---------------------------------------


def parse_txtar(data: bytes) -> list[tuple[str, bytes]]:
    """The files of a txtar archive, in order (txtar.Parse; the comment is dropped)."""
    files: list[tuple[str, bytes]] = []
    _, name, data = _find_marker(data)
    while name:
        content, following, data = _find_marker(data)
        files.append((name, content))
        name = following
    return files


def _find_marker(data: bytes) -> tuple[bytes, str, bytes]:
    i = 0
    while True:
        name, after = _is_marker(data[i:])
        if name:
            return data[:i], name, after
        j = data.find(b"\n", i)
        if j < 0:
            return _fix_nl(data), "", b""
        i = j + 1


def _is_marker(data: bytes) -> tuple[str, bytes]:
    if not data.startswith(b"-- "):
        return "", b""
    line, _, after = data.partition(b"\n")
    if not (line.endswith(b" --") and len(line) >= 6):
        return "", b""
    return line[3:-3].decode().strip(), after


def _fix_nl(data: bytes) -> bytes:
    return data if not data or data.endswith(b"\n") else data + b"\n"


# --- the fixtures -------------------------------------------------------------------------


def hash1(files: dict[str, bytes]) -> str:
    """dirhash.Hash1 over named contents."""
    summary = "".join(
        f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files)
    )
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


@dataclass(frozen=True)
class Fixture:
    """One module version of testdata/mod."""

    path: str
    version: str
    files: tuple[tuple[str, bytes], ...]

    @property
    def target(self) -> str:
        return f"{self.path}@{self.version}"

    def file(self, name: str) -> bytes | None:
        return next((data for n, data in self.files if n == name), None)

    def zip_bytes(self) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in self.files:
                if name in (".info", ".mod", ".zip"):
                    continue
                member = name[1:] if name.startswith("/") else f"{self.target}/{name}"
                zf.writestr(member, data)
        return out.getvalue()

    def sums(self) -> tuple[str, str]:
        """proxyGoSum's (h1 of the files, h1 of .mod)."""
        named = {f"{self.target}/{n}": d for n, d in self.files if not n.startswith(".")}
        return hash1(named), hash1({"go.mod": self.file(".mod") or b""})


def read_fixtures(directory: Path) -> list[Fixture]:
    """readModList: every `path_vers.txt` whose path and version unescape."""
    fixtures = []
    for file in sorted(directory.iterdir(), key=lambda f: f.name):
        if not file.name.endswith(".txt"):
            continue
        stem = file.name.removesuffix(".txt")
        i = stem.rfind("_v")
        if i < 0:
            continue
        try:
            path = unescape_path(stem[:i].replace("_", "/"))
            version = unescape_version(stem[i + 1 :])
        except ProtocolError:
            continue
        fixtures.append(Fixture(path, version, tuple(parse_txtar(file.read_bytes()))))
    return fixtures


def _listed(f: Fixture) -> bool:
    """list leaves out pseudo-versions and versions module.Check refuses."""
    if semver.is_pseudo(f.version) or not semver.is_valid(f.version):
        return False
    major = semver.major(f.version)
    m = re.search(r"/(v[0-9]+)$", f.path) or re.search(r"\.(v[0-9]+)(-unstable)?$", f.path)
    if m:
        return major == m.group(1)
    return major in ("v0", "v1") or semver.is_incompatible(f.version)


def _latest(versions: list[Fixture]) -> Fixture:
    releases = [
        f for f in versions if not semver.is_pseudo(f.version) and not semver.prerelease(f.version)
    ]
    pre = [f for f in versions if not semver.is_pseudo(f.version) and semver.prerelease(f.version)]
    pseudo = [f for f in versions if semver.is_pseudo(f.version)]
    group = releases or pre or pseudo
    best = group[0]
    for f in group[1:]:
        if semver.compare(f.version, best.version) > 0:
            best = f
    return best


@dataclass
class CmdGoFixtures:
    """The fixtures as a proxy tree on disk, and their checksum database (not started:
    serve it with `Upstream(tree, sumdb=...)`, under the proxy's /sumdb/ path)."""

    fixtures: list[Fixture]
    tree: Path
    sumdb: TestSumdb
    verifier_key: str

    @classmethod
    def load(cls, tree: Path, root: Path | None = None) -> CmdGoFixtures:
        root = root or goroot()
        verifier_key, signer_key = test_keys(root)
        fixtures = read_fixtures(root / FIXTURES)
        db = TestSumdb(SUMDB_NAME, signer_key=signer_key)
        assert db.verifier_key == verifier_key
        for f in fixtures:
            db.add(f.path, f.version, *f.sums())
        _write_tree(tree, fixtures)
        return cls(fixtures, tree, db, verifier_key)


def _write_tree(tree: Path, fixtures: list[Fixture]) -> None:
    by_path: dict[str, list[Fixture]] = {}
    for f in fixtures:
        by_path.setdefault(f.path, []).append(f)
        base = tree / escape(f.path) / "@v"
        base.mkdir(parents=True, exist_ok=True)
        stem = base / escape(f.version)
        for ext in ("info", "mod"):
            data = f.file(f".{ext}")
            if data is not None:
                Path(f"{stem}.{ext}").write_bytes(data)
        Path(f"{stem}.zip").write_bytes(f.zip_bytes())
    for path, versions in by_path.items():
        listed = "".join(f"{f.version}\n" for f in versions if _listed(f))
        (tree / escape(path) / "@v" / "list").write_text(listed)
        info = _latest(versions).file(".info")
        if info is not None:
            (tree / escape(path) / "@latest").write_bytes(info)


def download_result(obj: dict[str, object]) -> tuple[str, str]:
    """(target, error or "") of one `go mod download -json` object."""
    return f"{obj.get('Path')}@{obj.get('Version')}", str(obj.get("Error") or "")


def files_of(obj: dict[str, object]) -> dict[str, bytes]:
    """The .info, .mod and .zip go wrote into its module cache for one download."""
    out = {}
    for key in ("Info", "GoMod", "Zip"):
        name = obj.get(key)
        if isinstance(name, str) and name:
            out[key] = Path(name).read_bytes()
    return out
