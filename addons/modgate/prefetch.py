"""`modgate prefetch`: fill modgate's cache with everything some builds need, before the
network is gone.

What a build needs is what go itself would ask for: the build list of each main module
(`go list -m all`, asked through modgate, so the go.mod files of the whole graph are
fetched and checked on the way), and for each module version its `.info`, `.mod` and
`.zip`, the module's version list, and its checksum-database record (modgate fetches the
tiles that prove it). Every request goes through the running modgate's GOPROXY endpoint,
so its rules decide, and it verifies and stores what it lets through; its
`X-Modgate-Cache` answer says what was cached already. go.sum lines and `module@version`
lines name versions directly (a `/go.mod` line asks for the .mod alone).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modgate.errors import ModgateError
from modgate.goproxy import escape

FROM_CACHE = frozenset({"hit", "negative", "stale"})


@dataclass(frozen=True, order=True)
class Want:
    """A module version to have; `gomod_only`: its .mod is enough (graph loading)."""

    module: str
    version: str
    gomod_only: bool = False


@dataclass
class Outcome:
    fetched: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # what: why
    failed: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


# --- what to fetch -----------------------------------------------------------------------


def from_go_sum(text: str) -> set[Want]:
    """Versions a go.sum names; one with only a `/go.mod` line needs only its .mod."""
    zips, mods = set(), set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        module, version = fields[0], fields[1]
        if version.endswith("/go.mod"):
            mods.add((module, version.removesuffix("/go.mod")))
        else:
            zips.add((module, version))
    return {Want(m, v) for m, v in zips} | {Want(m, v, True) for m, v in mods - zips}


def from_lines(text: str) -> set[Want]:
    """`module@version` lines (blank lines and # comments skipped)."""
    out = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        module, at, version = line.partition("@")
        if not at or not module or not version:
            raise ModgateError(f"line {n}: {raw.strip()!r} is not module@version")
        out.add(Want(module, version))
    return out


def workspace_modules(go_work: Path) -> list[Path]:
    """The go.mod files of a go.work's `use` directives."""
    text = go_work.read_text(encoding="utf-8")
    dirs = re.findall(r'^\s*use\s+("[^"]+"|[^\s("]\S*)', text, re.M)
    for block in re.findall(r"^\s*use\s*\(([^)]*)\)", text, re.M):
        dirs += [d.split("//")[0].strip() for d in block.splitlines() if d.split("//")[0].strip()]
    return [(go_work.parent / d.strip('"')).resolve() / "go.mod" for d in dirs]


def build_list(go_mod: Path, goproxy: str, env: dict[str, str]) -> set[Want]:
    """`go list -m all` of the main module `go_mod`, asked through `goproxy` in a scratch
    copy (go.mod and go.sum only, a fresh module cache): nothing local is changed, and
    every go.mod of the graph passes through modgate."""
    go = shutil.which("go", path=env.get("PATH"))
    if go is None:
        raise ModgateError("prefetch needs the go command on PATH to read a build list")
    with tempfile.TemporaryDirectory(prefix="modgate-prefetch-") as scratch:
        work = Path(scratch) / "main"
        work.mkdir()
        shutil.copy(go_mod, work / "go.mod")
        if (go_mod.parent / "go.sum").is_file():
            shutil.copy(go_mod.parent / "go.sum", work / "go.sum")
        run_env = {
            **env,
            "GOPROXY": goproxy,
            "GOFLAGS": "-mod=mod",
            "GOWORK": "off",
            "GOMODCACHE": str(Path(scratch) / "modcache"),
            "GOTOOLCHAIN": "local",
        }
        done = subprocess.run(
            [go, "list", "-m", "-json", "-e", "all"],
            cwd=work,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        subprocess.run([go, "clean", "-modcache"], cwd=work, env=run_env, capture_output=True)
    if done.returncode != 0 and not done.stdout:
        raise ModgateError(
            f"{go_mod}: go list -m all failed: {' '.join(done.stderr.split())[:500]}"
        )
    out = set()
    for obj in _json_stream(done.stdout):
        if obj.get("Main"):
            continue
        replaced = obj.get("Replace")
        source = replaced if isinstance(replaced, dict) else obj
        module, version = str(source.get("Path", "")), str(source.get("Version", ""))
        if module and version:  # a replacement by a directory has no version: nothing to fetch
            out.add(Want(module, version))
    return out


def _json_stream(text: str) -> Iterable[dict[str, object]]:
    decoder, i = json.JSONDecoder(), 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = decoder.raw_decode(text, i)
        if isinstance(obj, dict):
            yield obj


def toolchains(go_mod: Path, goos: str, goarch: str) -> set[Want]:
    """The toolchain a go.mod's `toolchain` (or `go`) line names, as the module go
    downloads for GOTOOLCHAIN switches ("Go toolchains")."""
    text = go_mod.read_text(encoding="utf-8")
    m = re.search(r"^toolchain\s+go(\S+)", text, re.M) or re.search(r"^go\s+(\S+)", text, re.M)
    if not m:
        return set()
    version = m.group(1)
    if re.fullmatch(r"1\.\d+", version):  # a language version only: no toolchain to name
        return set()
    return {Want("golang.org/toolchain", f"v0.0.1-go{version}.{goos}-{goarch}")}


# --- fetching ----------------------------------------------------------------------------


async def fetch_all(
    endpoint: str,
    wants: Iterable[Want],
    database: str,
    private: Callable[[str], bool],
    jobs: int,
    progress: Callable[[int, int], None],
    available: Callable[[str], bool] = lambda path: True,
    authorization: str = "",
) -> Outcome:
    """Ask `endpoint` for what each Want needs, `jobs` at a time; `progress(n, bytes)`
    after each version. `available(path)`: whether the source has that path at all (an
    import asks only for what its bundle carries: go fetched no .info for a version whose
    go.mod alone it read). `authorization`: the header to send (a modgate with teams)."""
    import aiohttp

    outcome = Outcome()
    limit = asyncio.Semaphore(jobs)
    lists: set[str] = set()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    headers = {"Authorization": authorization} if authorization else None
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False, headers=headers) as session:

        async def get(path: str) -> tuple[int, str, str, int]:
            async with session.get(f"{endpoint}/{path}") as r:
                size = 0
                first = b""
                async for chunk in r.content.iter_chunked(1 << 16):
                    first = first or chunk[:300]
                    size += len(chunk)
                why = (
                    first.decode("utf-8", "replace").strip().splitlines()[0]
                    if r.status != 200 and first
                    else ""
                )
                return r.status, r.headers.get("X-Modgate-Cache", ""), why, size

        async def one(want: Want) -> None:
            name = f"{want.module}@{want.version}"
            escaped, version = escape(want.module), escape(want.version)
            paths = [f"{escaped}/@v/{version}.info", f"{escaped}/@v/{version}.mod"]
            if not want.gomod_only:
                paths.append(f"{escaped}/@v/{version}.zip")
            if want.module not in lists:
                lists.add(want.module)
                paths.append(f"{escaped}/@v/list")
            if database and not private(want.module):
                paths.append(f"sumdb/{database}/lookup/{escaped}@{version}")
            paths = [p for p in paths if available(p)]
            async with limit:
                fresh = False
                try:
                    for path in paths:
                        status, cache, why, size = await get(path)
                        outcome.bytes += size
                        if status == 403:
                            outcome.refused[name] = why or "403"
                            return
                        if status != 200 and not path.endswith("/@v/list"):
                            outcome.failed[name] = f"{path}: {why or status}"
                            return
                        fresh = fresh or cache not in FROM_CACHE
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    outcome.failed[name] = f"{type(e).__name__}: {e}"
                    return
                finally:
                    progress(1, outcome.bytes)
                (outcome.fetched if fresh else outcome.cached).append(name)

        await asyncio.gather(*(one(w) for w in sorted(set(wants))))
    return outcome
