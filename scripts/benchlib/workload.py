"""The benchmark's module graph: a service's dependencies, in size and shape.

Built from the test world's `ModuleVersion` and `World` (tests/world is shared with
other tests and not changed for the benchmark). Sizes follow a realistic spread:
most zips 10-500 KB, some 2-20 MB, a few of 50 MB or more, all incompressible.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from world import DOMAIN, ModuleVersion, World, proxy_path

KB, MB, MIB = 1000, 1000 * 1000, 1 << 20
_RELEASES = ("v1.0.0", "v1.1.0", "v1.2.0", "v1.2.1", "v1.3.0")
# Bumped when the shape of the generated world changes, so cached trees are rebuilt.
_GENERATION = 3


@dataclass(frozen=True)
class Spec:
    """What to generate; `huge_bytes` is the lone module of the memory case."""

    modules: int = 150
    small: tuple[int, int] = (10 * KB, 500 * KB)
    medium: tuple[int, int] = (2 * MB, 20 * MB)
    medium_share: float = 0.12
    large: tuple[int, int] = (50 * MB, 64 * MB)
    large_count: int = 3
    huge_bytes: int = 210 * MIB
    seed: int = 6

    def digest(self) -> str:
        text = json.dumps({"generation": _GENERATION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


QUICK = Spec(
    modules=16, medium=(1 * MB, 2 * MB), medium_share=0.15, large=(4 * MB, 5 * MB),
    large_count=1, huge_bytes=24 * MIB,
)  # fmt: skip


@dataclass(frozen=True)
class Workload:
    """A generated graph laid out as a proxy tree (servable as `GOPROXY=file://tree`)."""

    tree: Path
    modules: tuple[tuple[str, str], ...]  # (path, latest version): what the app requires
    huge: tuple[str, str]  # the memory case's module, required by nothing
    zip_bytes: int  # total size of the zips one download of the app fetches
    artifacts: int  # files in the tree
    sums: tuple[tuple[str, str, str, str], ...]  # (path, version, zip h1, go.mod h1)

    def app(self, dest: Path, modules: tuple[tuple[str, str], ...] | None = None) -> Path:
        """A main module requiring `modules` (default: all) at their latest versions."""
        dest.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"\t{p} {v}\n" for p, v in modules or self.modules)
        (dest / "go.mod").write_text(
            f"module {DOMAIN}/benchapp\n\ngo 1.21\n\nrequire (\n{lines})\n"
        )
        return dest


def build(spec: Spec, cache: Path) -> Workload:
    """The workload of `spec`, generated into `cache` once and reused by later runs."""
    tree = cache / f"tree-{spec.digest()}"
    manifest = tree / "bench-manifest.json"
    if not manifest.is_file():
        shutil.rmtree(tree, ignore_errors=True)
        partial = tree.with_name(tree.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        world = World(_versions(spec))
        world.write_proxy_tree(partial)
        latest = [(m, world.latest(m).version) for m in world.modules()]
        huge = (f"{DOMAIN}/bench/huge", "v1.0.0")
        app = [pair for pair in latest if pair != huge]
        size = sum((partial / proxy_path(m, v, ".zip")).stat().st_size for m, v in app)
        count = sum(1 for p in partial.rglob("*") if p.is_file())
        sums = [(mv.path, mv.version, mv.zip_hash, mv.gomod_hash) for mv in world]
        (partial / "bench-manifest.json").write_text(
            json.dumps(
                {"modules": app, "huge": huge, "zip_bytes": size, "artifacts": count, "sums": sums}
            )
        )
        partial.rename(tree)
    data = json.loads(manifest.read_text())
    return Workload(
        tree=tree,
        modules=tuple((m, v) for m, v in data["modules"]),
        huge=(data["huge"][0], data["huge"][1]),
        zip_bytes=data["zip_bytes"],
        artifacts=data["artifacts"],
        sums=tuple((m, v, z, g) for m, v, z, g in data["sums"]),
    )


def _versions(spec: Spec) -> list[ModuleVersion]:
    """Module i has 2-5 releases and requires up to three of the modules after it; each
    release requires the matching release of its dependencies. The modules say `go 1.16`
    (no graph pruning), so MVS reads the go.mod files of older versions too, as it does
    for a real service with pre-1.17 dependencies."""
    rng = random.Random(spec.seed)
    paths = [f"{DOMAIN}/bench/{_name(i)}" for i in range(spec.modules)]
    releases = [list(_RELEASES[: rng.randint(2, len(_RELEASES))]) for _ in paths]
    large = set(rng.sample(range(spec.modules), spec.large_count))
    versions = []
    for i, path in enumerate(paths):
        later = list(range(i + 1, min(spec.modules, i + 12)))
        deps = rng.sample(later, min(len(later), rng.randint(0, 3)))
        size = _size(rng, spec, i in large)
        for k, version in enumerate(releases[i]):
            requires = [(paths[j], releases[j][min(k, len(releases[j]) - 1)]) for j in deps]
            # Sizes drift a little between releases, as real modules' do.
            payload = int(size * (0.9 + 0.05 * k))
            versions.append(
                ModuleVersion(
                    path, version, files={}, requires=requires, go="1.16", payload_bytes=payload
                )
            )
    versions.append(
        ModuleVersion(f"{DOMAIN}/bench/huge", "v1.0.0", files={}, payload_bytes=spec.huge_bytes)
    )
    return versions


def _size(rng: random.Random, spec: Spec, large: bool) -> int:
    if large:
        low, high = spec.large
    elif rng.random() < spec.medium_share:
        low, high = spec.medium
    else:
        low, high = spec.small
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def _name(i: int) -> str:
    return f"m{i:03d}"
