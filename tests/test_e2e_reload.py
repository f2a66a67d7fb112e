"""Hot reload of rules.yaml, end to end: the real go command through a real `modgate run`
whose rules file is emptied or cut short while it runs, as an editor may leave it in
the middle of saving. The rules in force must stay (a denied version stays denied for
go) and the log must say why; only a file that says `unrestricted: true` drops them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import DOMAIN, ModuleVersion, World, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
LIB = f"{DOMAIN}/lib"
CVE = "v1.2.x sends credentials to a third party (CVE-2099-0001); use v1.1.x"
POLICY = f"""
hosts:
  allow: [git.modgate.test]
modules:
  - deny: {LIB}
    versions: ">=1.2.0"
    name: no leaky lib
    reason: "{CVE}"
"""
REFUSED = f'server response: modgate: refused {LIB}@v1.2.0: rule modules[0] "no leaky lib": {CVE}'


def rules(upstream: str, policy: str = "") -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
        f"checksum:\n  private: {DOMAIN!r}\n{policy}"
    )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World([ModuleVersion(LIB, v) for v in ("v1.1.0", "v1.2.0")]) as w:
        yield w


def get_lib(world: World, gate: Gate, home: Path) -> str:
    """`go get LIB@v1.2.0` from a fresh client and module; its stderr ("" if it worked)."""
    app = write_main_module(world, home / "app", imports=[LIB])
    env = gate.client_env(go_env(home, f"https://{HOST}"))
    done = run_go(["get", f"{LIB}@v1.2.0"], env, app.dir, check=False)
    return done.stderr if done.returncode else ""


def test_an_emptied_or_truncated_rules_file_keeps_the_rules_for_the_go_command(
    world: World, tmp_path: Path
) -> None:
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream.url, POLICY)) as gate:
        assert REFUSED in get_lib(world, gate, tmp_path / "c1")

        gate.rules.write_text("")  # truncated to nothing, as mid-save
        gate.wait_for(
            f"modgate: {gate.rules}: edit not applied, the previous rules stay in force: "
            "the file sets nothing but defaults"
        )
        assert REFUSED in get_lib(world, gate, tmp_path / "c2")

        gate.rules.write_text(rules(upstream.url))  # cut short after the checksum section
        gate.wait_for("it drops every host and module rule (hosts, modules are gone)")
        assert "write 'unrestricted: true' in it" in gate.output()
        assert REFUSED in get_lib(world, gate, tmp_path / "c3")
        assert upstream.count("*/lib/@v/v1.2.0.zip") == 0

        gate.rules.write_text("unrestricted: true\n" + rules(upstream.url))  # said so
        gate.wait_for(f"modgate: reloaded {gate.rules}: mode enforce, 0 module rules")
        assert get_lib(world, gate, tmp_path / "c4") == ""
