"""Upstream redirects through a real `modgate run`: followed only to hosts the rules
allow, at most as many as go follows, and never back into modgate itself (which would
wait on its own fetch until it timed out)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from world.gate import Gate, free_port
from world.modules import ModuleVersion, World
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
MODULE = "example.modgate.test/m"
VERSIONS = ("v1.0.0", "v1.0.1", "v1.0.2", "v1.0.3", "v1.0.4")


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World([ModuleVersion(MODULE, v) for v in VERSIONS]) as w:
        yield w


def get(url: str) -> tuple[int, bytes, float]:
    """Status, body and seconds taken; bounded well below the fetcher's 60 s timeout."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read(), time.monotonic() - started
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.monotonic() - started


def test_upstream_redirects_go_only_where_the_rules_allow_and_never_into_modgate(
    world: World, tmp_path: Path
) -> None:
    with Upstream(world) as first, Upstream(world) as allowed, Upstream(world) as denied:
        rules = (
            f"proxies:\n  - url: https://{HOST}\n    upstream: {first.url}\n"
            f"checksum:\n  private: {MODULE}\n"
            f'hosts:\n  allow: ["127.0.0.1:{allowed.port}"]\n  default: deny\n'
        )
        with Gate(tmp_path / "gate", rules) as gate:
            mods = [f"/{MODULE}/@v/{v}.mod" for v in VERSIONS]
            first.fault(mods[0], redirect=f"{allowed.url}{{path}}")
            first.fault(mods[1], redirect=f"{denied.url}{{path}}")
            first.fault(mods[2], redirect=f"{gate.goproxy_url}{{path}}")
            first.fault(mods[3], redirect=f"{gate.proxy_url}{{path}}")
            first.fault(mods[4], redirect=f"{first.url}{{path}}")

            status, body, _ = get(gate.goproxy_url + mods[0])
            assert (status, body) == (200, world.get(MODULE, VERSIONS[0]).gomod)
            assert allowed.count(mods[0]) == 1

            refusals = {
                mods[1]: f"redirect to {denied.url}{mods[1]} refused: rule hosts.default",
                mods[2]: f"redirect to {gate.goproxy_url}{mods[2]} refused: that is modgate",
                mods[3]: f"redirect to {gate.proxy_url}{mods[3]} refused: that is modgate",
                mods[4]: "stopped after 10 redirects",
            }
            for path, reason in refusals.items():
                status, body, took = get(gate.goproxy_url + path)
                assert status == 502, (path, body)
                text = body.decode()
                assert text.startswith(f"modgate: {MODULE}@"), text
                assert f"no upstream answered: {first.url}: {reason}" in text
                assert took < 10, f"{path} took {took:.1f}s"
            assert denied.counts() == {}
            assert first.count(mods[4]) == 11
            # Nothing was kept: with the redirects gone, each is fetched and served afresh.
            first.clear_faults()
            for path in refusals:
                status, body, _ = get(gate.goproxy_url + path)
                assert status == 200
                assert body == world.get(MODULE, path.rsplit("/", 1)[1][: -len(".mod")]).gomod


def test_an_upstream_that_leads_back_into_modgate_is_refused_at_once(tmp_path: Path) -> None:
    """A chain that reaches modgate itself by a route no address check sees (here its own
    endpoint as an upstream; in life a load balancer in front of it): the request that
    comes back carries modgate's own Via and is refused, instead of waiting on itself."""
    port = free_port()
    rules = (
        f"proxies:\n  - url: https://{HOST}\n    upstream: http://127.0.0.1:{port}\n"
        f"checksum:\n  private: {MODULE}\n"
    )
    gate = Gate(tmp_path / "gate", rules)
    gate.extra_args = ["--goproxy-port", str(port)]
    with gate:
        status, body, took = get(f"{gate.goproxy_url}/{MODULE}/@v/v1.0.0.mod")
    assert status == 502, body
    assert f"no upstream answered: http://127.0.0.1:{port}: 508 modgate: " in body.decode()
    assert "came back" in body.decode()
    assert took < 10
