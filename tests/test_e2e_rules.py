"""rules.yaml's policy, end to end: the real go command through a real `modgate run`.

What the developer sees is the point: a refused version names the rule and its reason
after go's "server response:", `@latest` resolves to the newest allowed version, a
host outside the allowlist is refused with modgate's message, private modules come
from their own upstream, audit mode only records, and edits to rules.yaml apply
without a restart.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from modgate.gomod import parse_gomod
from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import DOMAIN, ModuleVersion, World, default_files, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
CORP = "corp.modgate.test"
LIB = f"{DOMAIN}/lib"
FLAKY = f"{DOMAIN}/flaky"
QUOTED = f"{DOMAIN}/quoted"
CVE = "v1.2.x sends credentials to a third party (CVE-2099-0001); use v1.1.x"
DENY_LIB = f"""
modules:
  - deny: {LIB}
    versions: ">=1.2.0"
    name: no leaky lib
    reason: "{CVE}"
"""


def rules(upstream: str, policy: str = "", private: str = DOMAIN) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
        f"checksum:\n  private: {private!r}\n{policy}"
    )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World(
        [ModuleVersion(LIB, v) for v in ("v1.0.0", "v1.1.0", "v1.2.0", "v1.2.1")]
        + [ModuleVersion(f"{DOMAIN}/other", "v0.1.0")]
        + [ModuleVersion(FLAKY, v) for v in ("v1.0.0", "v1.1.0")]
        + [
            ModuleVersion(
                FLAKY,
                "v1.2.0",
                files={
                    **default_files(FLAKY, "v1.2.0"),
                    "go.mod": f"module {FLAKY}\n\ngo 1.21\n\n// Corrupts data on write.\nretract v1.1.0\n",
                },
            )
        ]
        + [ModuleVersion(QUOTED, v) for v in ("v1.0.0", "v1.1.0")]
        + [
            ModuleVersion(
                QUOTED,
                "v1.2.0",
                files={
                    **default_files(QUOTED, "v1.2.0"),
                    # A line go's modfile lexes as one string token: an unknown directive
                    # that go skips in a dependency's go.mod.
                    "go.mod": f'module {QUOTED}\n\ngo 1.21\n\n"//"\n\n// Leaks memory.\nretract v1.1.0\n',
                },
            )
        ]
    ) as w:
        yield w


@pytest.fixture
def upstream(world: World) -> Iterator[Upstream]:
    with Upstream(world) as up:
        yield up


def client(gate: Gate, home: Path, **extra: str) -> dict[str, str]:
    return gate.client_env(go_env(home, f"https://{HOST}", **extra))


def new_app(world: World, where: Path) -> Path:
    app = write_main_module(world, where, imports=[f"{DOMAIN}/other"])
    return app.dir


def required(app: Path, module: str) -> str:
    requires = parse_gomod((app / "go.mod").read_text()).requires
    return next(r.version for r in requires if r.module == module)


def wait_until_refused(url: str, timeout: float = 15) -> None:
    """The rules file is polled every second: wait until modgate has applied an edit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url).close()
        except urllib.error.HTTPError as e:
            if e.code == 403:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} still not refused after {timeout}s")


def test_a_denied_version_fails_with_the_rule_and_its_reason(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    with Gate(tmp_path / "gate", rules(upstream.url, DENY_LIB)) as gate:
        app = new_app(world, tmp_path / "app")
        done = run_go(["get", f"{LIB}@v1.2.0"], client(gate, tmp_path / "c"), app, check=False)
        assert done.returncode != 0
        assert "403 Forbidden" in done.stderr
        assert (
            f'server response: modgate: refused {LIB}@v1.2.0: rule modules[0] "no leaky lib": {CVE}'
            in done.stderr
        ), done.stderr
        assert upstream.count("*/lib/@v/v1.2.0.zip") == 0  # refused before any fetch
        run_go(["get", f"{LIB}@v1.1.0"], client(gate, tmp_path / "c"), app)


def test_latest_and_upgrades_pick_the_newest_allowed_version(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    with Gate(tmp_path / "gate", rules(upstream.url, DENY_LIB)) as gate:
        app = new_app(world, tmp_path / "app")
        env = client(gate, tmp_path / "c")
        run_go(["get", f"{LIB}@latest"], env, app)
        assert required(app, LIB) == "v1.1.0"
        run_go(["get", f"{LIB}@v1.0.0"], env, app)
        run_go(["get", "-u", LIB], env, app)
        assert required(app, LIB) == "v1.1.0"
        versions = run_go(["list", "-m", "-versions", LIB], env, app)
        assert versions.stdout.split() == [LIB, "v1.0.0", "v1.1.0"]
        # @latest itself, asked directly: the newest allowed version's .info
        with urllib.request.urlopen(f"{gate.goproxy_url}/{LIB}/@latest") as r:
            assert json.load(r)["Version"] == "v1.1.0"


def test_versions_the_module_retracts_are_refused_and_hidden(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    policy = "modules:\n  - allow: '**'\n    refuse: [retracted]\n    reason: 'ask #go-platform'\n"
    with Gate(tmp_path / "gate", rules(upstream.url, policy)) as gate:
        app = new_app(world, tmp_path / "app")
        env = client(gate, tmp_path / "c")
        done = run_go(["get", f"{FLAKY}@v1.1.0"], env, app, check=False)
        assert (
            f"server response: modgate: refused {FLAKY}@v1.1.0: rule modules[0]: retracted by its "
            "author (v1.1.0: Corrupts data on write.): ask #go-platform"
        ) in done.stderr, done.stderr
        versions = run_go(["list", "-m", "-versions", FLAKY], env, app)
        assert versions.stdout.split() == [FLAKY, "v1.0.0", "v1.2.0"]
        run_go(["get", f"{FLAKY}@v1.0.0"], env, app)


def test_a_go_mod_line_go_skips_does_not_unretract_a_version(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    """The latest go.mod has a line `"//"`: go skips it; reading it must not make modgate
    decide without the retractions (or fail, letting the origin's answer through)."""
    policy = "modules:\n  - allow: '**'\n    refuse: [retracted]\n"
    with Gate(tmp_path / "gate", rules(upstream.url, policy)) as gate:
        app = new_app(world, tmp_path / "app")
        env = client(gate, tmp_path / "c")
        done = run_go(["get", f"{QUOTED}@v1.1.0"], env, app, check=False)
        assert done.returncode != 0
        assert (
            f"server response: modgate: refused {QUOTED}@v1.1.0: rule modules[0]: retracted by "
            "its author (v1.1.0: Leaks memory.)"
        ) in done.stderr, done.stderr
        assert upstream.count("*/quoted/@v/v1.1.0.zip") == 0
        run_go(["get", f"{QUOTED}@v1.2.0"], env, app)  # go itself reads that go.mod


def test_a_host_outside_the_allowlist_is_refused_with_a_clear_message(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    policy = """
hosts:
  allow: [git.modgate.test]
  reason: "this network reaches modules only through modgate; ask #go-platform"
"""
    with Gate(tmp_path / "gate", rules(upstream.url, policy)) as gate:
        # go falls through to `direct` (the proxy has no such module), and its first step,
        # https://vcs.modgate.test/x/y?go-get=1 through HTTPS_PROXY, is refused at CONNECT:
        # go shows the CONNECT answer's status text, which modgate makes its message.
        app = new_app(world, tmp_path / "app")
        env = client(gate, tmp_path / "c", GOPROXY=f"https://{HOST},direct")
        done = run_go(["get", "vcs.modgate.test/x/y@v1.0.0"], env, app, check=False)
        assert done.returncode != 0
        message = (
            "modgate: refused host vcs.modgate.test:443: rule hosts.default: this network "
            "reaches modules only through modgate; ask #go-platform"
        )
        assert f'Get "https://vcs.modgate.test/x/y?go-get=1": {message}' in done.stderr, done.stderr

        proxy_host, proxy_port = gate.proxy_url.removeprefix("http://").split(":")
        tunnel = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=10)
        tunnel.set_tunnel("elsewhere.modgate.test", 443)
        with pytest.raises(OSError, match="403 modgate: refused host elsewhere.modgate.test:443"):
            tunnel.request("GET", "/")
        tunnel.close()

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": gate.proxy_url}))
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open("http://plain.modgate.test/file", timeout=10)
        assert refused.value.code == 403
        assert (
            refused.value.read()
            .decode()
            .startswith("modgate: refused host plain.modgate.test:80: rule hosts.default:")
        )

        allowed = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=10)
        allowed.set_tunnel("git.modgate.test", 443)
        allowed.connect()  # the tunnel is open
        allowed.close()


def test_a_private_pattern_routes_to_its_own_upstream(world: World, tmp_path: Path) -> None:
    secret = ModuleVersion(f"{CORP}/team/secret", "v1.0.0")
    with (
        Upstream(world) as public,
        Upstream(World([secret])) as internal,
        Gate(
            tmp_path / "gate",
            rules(
                public.url,
                f"routes:\n  - modules: '*.modgate.test/team'\n    upstream: {internal.url!r}\n"
                f"  - modules: ['{CORP}']\n    upstream: {internal.url!r}\n",
                private=f"{DOMAIN},{CORP}",
            ),
        ) as gate,
    ):
        app = write_main_module(World([*world, secret]), tmp_path / "app",
                                imports=[f"{DOMAIN}/other", secret.path])  # fmt: skip
        run_go(["mod", "tidy"], client(gate, tmp_path / "c"), app.dir)
        built = run_go(["run", "."], client(gate, tmp_path / "c"), app.dir)
        assert built.stderr == app.expected_output
        assert internal.count(f"/{CORP}/*") > 0
        assert internal.count(f"/{DOMAIN}/*") == 0
        assert public.count(f"/{CORP}/*") == 0
        assert public.count(f"/{DOMAIN}/*") > 0


def test_audit_mode_lets_everything_through_and_records_each_would_be_refusal(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    policy = f"mode: audit\nhosts:\n  allow: []\n{DENY_LIB}"
    with Gate(tmp_path / "gate", rules(upstream.url, policy)) as gate:
        app = new_app(world, tmp_path / "app")
        env = client(gate, tmp_path / "c")
        versions = run_go(["list", "-m", "-versions", LIB], env, app)
        assert versions.stdout.split() == [LIB, "v1.0.0", "v1.1.0", "v1.2.0", "v1.2.1"]
        run_go(["get", f"{LIB}@v1.2.0"], env, app)
        run_go(["get", f"{LIB}@latest"], env, app)
        assert required(app, LIB) == "v1.2.1"
        for version in ("v1.2.0", "v1.2.1"):
            gate.wait_for(
                f'audit: would refuse {LIB}@{version}: rule modules[0] "no leaky lib": {CVE}'
            )
        assert "would refuse " + LIB + "@v1.1.0" not in gate.output()
        proxy_host, proxy_port = gate.proxy_url.removeprefix("http://").split(":")
        tunnel = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=10)
        tunnel.set_tunnel("vcs.modgate.test", 443)
        tunnel.connect()  # the tunnel is open
        tunnel.close()
        gate.wait_for("audit: would refuse host vcs.modgate.test:443: rule hosts.default")


def test_editing_rules_yaml_changes_the_next_decision_and_a_broken_edit_keeps_the_rules(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    with Gate(tmp_path / "gate", rules(upstream.url)) as gate:
        app = new_app(world, tmp_path / "app")
        run_go(["get", f"{LIB}@v1.2.0"], client(gate, tmp_path / "c1"), app)

        gate.rules.write_text(rules(upstream.url, DENY_LIB))
        wait_until_refused(f"{gate.goproxy_url}/{LIB}/@v/v1.2.0.zip")
        app2 = new_app(world, tmp_path / "app2")
        done = run_go(["get", f"{LIB}@v1.2.0"], client(gate, tmp_path / "c2"), app2, check=False)
        assert f'refused {LIB}@v1.2.0: rule modules[0] "no leaky lib"' in done.stderr, done.stderr

        broken = rules(upstream.url, DENY_LIB.replace('">=1.2.0"', "'^v1.x'"))
        gate.rules.write_text(broken)
        line = broken.splitlines().index("    versions: '^v1.x'") + 1
        gate.wait_for(f"{gate.rules}:{line}: modules[0].versions: '^v1.x' is not a version range")
        assert "the previous rules stay in force" in gate.output()
        app3 = new_app(world, tmp_path / "app3")
        done = run_go(["get", f"{LIB}@v1.2.0"], client(gate, tmp_path / "c3"), app3, check=False)
        assert f'refused {LIB}@v1.2.0: rule modules[0] "no leaky lib"' in done.stderr, done.stderr
