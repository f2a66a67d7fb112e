"""Real projects from the live registry (issue 13), `scripts/bench --only live`.

A project is a well-known module at a release: its go.mod and go.sum, taken from its
zip as the registry serves it (`go mod download -json module@version`, once per
workdir). For each project, interleaved within each repetition, a fresh module cache
runs `go mod download`:

    direct           GOPROXY and GOSUMDB as `go env` has them, go.sum present
    direct-nosum     the same with go.sum removed: go asks the checksum database
                     for every module
    modgate-proxy    through modgate as an HTTPS proxy (the variables `modgate env`
                     prints), go.sum present
    modgate-goproxy  through modgate's GOPROXY endpoint, go.sum present
    peer-goproxy,    through the peers given, each fetching from `go env GOPROXY` and
    peer-athens      verifying against `go env GOSUMDB`, go.sum present

modgate and the peers start cold (empty storage) for every download. modgate runs
with no rules file (`--rules ''`): its defaults route to `go env GOPROXY` and verify
against `go env GOSUMDB` through it. The registry's address is read at run time and
never printed. The part is skipped, with one line saying why, when the registry does
not answer.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib.procs import PEERS, Modgate, Server, remove, timed_go
from world import find_go, go_env

# Popular modules of 15-250 dependencies, at releases this machine's Go (1.26) accepts
# and whose go.mod has no replace directive (a local replace cannot work without its
# repository).
PROJECTS = (
    ("github.com/spf13/viper", "v1.21.0"),
    ("github.com/prometheus/client_golang", "v1.25.0"),
    ("github.com/gin-gonic/gin", "v1.12.0"),
    ("google.golang.org/grpc", "v1.85.0"),
    ("k8s.io/client-go", "v0.37.2"),
    ("github.com/minio/minio-go/v7", "v7.4.1"),
)
VARIANTS = ("direct", "direct-nosum", "modgate-proxy", "modgate-goproxy")


def registry() -> tuple[str, str, str]:
    """(GOPROXY, GOSUMDB) as `go env` has them here, outside any test isolation, and
    "" or why they could not be read."""
    try:
        done = subprocess.run(
            [find_go(), "env", "GOPROXY", "GOSUMDB"], capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return "", "", f"go env GOPROXY GOSUMDB: {e}"
    values = done.stdout.splitlines()
    if done.returncode != 0 or len(values) != 2 or not values[0]:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return "", "", f"go env GOPROXY GOSUMDB exited {done.returncode}: {said[:200]}"
    return values[0], values[1], ""


def projects(workdir: Path, goproxy: str, gosumdb: str, count: int) -> tuple[dict[str, Path], str]:
    """The first `count` projects' directories (go.mod, go.sum) under `workdir`, fetched
    once; and "" or why the registry could not give them (then the part is skipped)."""
    found: dict[str, Path] = {}
    for module, version in PROJECTS[:count]:
        dest = workdir / "live" / f"{module.replace('/', '_')}@{version}"
        if not (dest / "go.sum").is_file():
            home = workdir / "live-fetch"
            try:
                why = _fetch(module, version, dest, go_env(home, goproxy, GOSUMDB=gosumdb), home)
            finally:
                remove(home)
            if why:
                return found, f"the registry (go env GOPROXY): {module}@{version}: {why}"
        found[f"{module}@{version}"] = dest
    return found, ""


def _fetch(module: str, version: str, dest: Path, env: dict[str, str], home: Path) -> str:
    """The module's go.mod and go.sum, from its zip, into `dest`; "" or what failed."""
    home.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [find_go(), "mod", "download", "-json", f"{module}@{version}"], env=env, cwd=home,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "no answer in 120s"
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Error" in info:
        return str(info.get("Error") or (done.stderr.strip().splitlines() or ["?"])[-1])[:200]
    partial = dest.with_name(dest.name + ".partial")
    remove(partial)
    partial.mkdir(parents=True)
    (partial / "go.mod").write_bytes(Path(info["GoMod"]).read_bytes())
    with zipfile.ZipFile(info["Zip"]) as z:
        (partial / "go.sum").write_bytes(z.read(f"{module}@{version}/go.sum"))
    remove(dest)
    partial.rename(dest)
    return ""


def modgate_env(gate: Modgate) -> dict[str, str]:
    """The variables `modgate env` prints for this gate's HTTPS proxy."""
    port = gate.proxy_url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "modgate", "env", "--confdir", str(gate.bundle.parent),
         "--listen-port", port], capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    env = {}
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export":
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


def bench(
    cfg: dict[str, Any], args: argparse.Namespace, peers: dict[str, Path],
    margs: tuple[str, ...], here: Path, say: Callable[[str], None],
) -> tuple[dict[str, Any], list[str], str]:  # fmt: skip
    """Every variant of every project, interleaved: (the data for `summary`, the
    errors, "" or why the part was skipped)."""
    goproxy, gosumdb, why = registry()
    if why:
        return {}, [], why
    count = args.live_projects or len(PROJECTS)
    found, why = projects(args.workdir.expanduser(), goproxy, gosumdb, count)
    if why:
        return {}, [], why
    errors: list[str] = []
    variants = [*VARIANTS, *(f"peer-{k}" for k in peers)]
    times: dict[str, dict[str, list[float]]] = {name: {} for name in found}
    deps = {name: _requirements(path) for name, path in found.items()}
    for rep in range(cfg["reps"]):
        for name, project in found.items():
            say(f"live, repetition {rep + 1} of {cfg['reps']}: {name} ({deps[name]} modules)")
            for variant in variants[rep % len(variants) :] + variants[: rep % len(variants)]:
                seconds, error = _download(variant, project, goproxy, gosumdb, peers, margs,
                                           args.source, here)  # fmt: skip
                if error:
                    errors.append(f"live {name} {variant}: {error}")
                    say(f"  {variant}: FAILED after {seconds:.1f}s: {error}")
                    continue
                times[name].setdefault(variant, []).append(seconds)
                say(f"  {variant}: {seconds:.2f}s")
    return {"variants": variants, "requirements": deps, "times": times}, errors, ""


def _requirements(project: Path) -> int:
    """Modules the project's go.sum names (each a module the download fetches)."""
    lines = (project / "go.sum").read_text().splitlines()
    return len({line.split()[0] for line in lines if line.strip()})


def _download(
    variant: str, project: Path, goproxy: str, gosumdb: str, peers: dict[str, Path],
    margs: tuple[str, ...], source: Path | None, here: Path,
) -> tuple[float, str]:  # fmt: skip
    home = here / "live-go"
    remove(home)
    app = home / "app"
    app.mkdir(parents=True)
    (app / "go.mod").write_bytes((project / "go.mod").read_bytes())
    if variant != "direct-nosum":
        (app / "go.sum").write_bytes((project / "go.sum").read_bytes())
    env = go_env(home, goproxy, GOSUMDB=gosumdb)
    server: Server | None = None
    try:
        if variant.startswith("modgate-"):
            gate = Modgate(here / "live-server", "", "", margs, source).start()
            server = gate
            if variant == "modgate-proxy":
                env.update(modgate_env(gate))
            else:
                env["GOPROXY"] = gate.goproxy_url
        elif variant.startswith("peer-"):
            kind = variant.removeprefix("peer-")
            try:
                server = PEERS[kind](peers[kind], here / "live-server", goproxy, gosumdb).start()
            except RuntimeError as e:
                return 0.0, f"{kind} did not start: {str(e)[:300]}"
            env["GOPROXY"] = server.goproxy_url
        return timed_go(["mod", "download"], env, app, timeout=900)
    finally:
        if server is not None:
            server.stop()
        remove(here / "live-server")
        remove(home)


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """Per project: the median seconds of each variant and its ratio to direct; and the
    median of those ratios over the projects."""
    out: dict[str, Any] = {"projects": {}, "median_over_direct": {}}
    ratios: dict[str, list[float]] = {}
    for name, times in data["times"].items():
        medians = {v: round(statistics.median(t), 3) for v, t in times.items() if t}
        direct = medians.get("direct")
        over = {v: round(m / direct, 3) for v, m in medians.items() if direct and v != "direct"}
        for v, x in over.items():
            ratios.setdefault(v, []).append(x)
        out["projects"][name] = {"modules": data["requirements"][name], "median_s": medians,
                                 "over_direct": over}  # fmt: skip
    out["median_over_direct"] = {v: round(statistics.median(x), 3) for v, x in ratios.items()}
    return out


def table(result: dict[str, Any]) -> list[str]:
    """Lines for the report: one per project, seconds direct and ratios."""
    variants = [v for v in ("direct-nosum", "modgate-goproxy", "modgate-proxy", "peer-goproxy",
                            "peer-athens") if v in result["median_over_direct"]]  # fmt: skip
    head = {"direct-nosum": "no go.sum", "modgate-goproxy": "mg endpoint", "modgate-proxy":
            "mg proxy", "peer-goproxy": "goproxy", "peer-athens": "Athens"}  # fmt: skip
    lines = [f"{'real projects, cold, vs direct (go.sum present)':58} {'direct s':>9}"
             + "".join(f"{head[v]:>13}" for v in variants)]  # fmt: skip
    for name, p in result["projects"].items():
        direct = p["median_s"].get("direct")
        cells = "".join(f"{_x(p['over_direct'].get(v)):>13}" for v in variants)
        label = f"{name} ({p['modules']} modules)"
        lines.append(f"{label:58} {'-' if direct is None else f'{direct:.2f}':>9}{cells}")
    cells = "".join(f"{_x(result['median_over_direct'].get(v)):>13}" for v in variants)
    lines.append(f"{'median over the projects':58} {'':>9}{cells}")
    return lines


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
