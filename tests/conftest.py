"""Shared fixtures. The test world (tests/world) is importable as `world` through
pytest's `pythonpath` setting in pyproject.toml."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from world.modules import World, graph

# Property tests (tests/test_fuzz_*.py): a small budget in the suite, which must stay fast
# on 2 shared cores; HYPOTHESIS_PROFILE=fuzz for a long run. No deadline: a zip or a
# checksum-database proof can take a while on a busy machine without being a bug.
settings.register_profile(
    "suite", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("MODGATE_FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The fixture graph, built once per test module: 24 modules, or as many as the test
    module's WORLD_MODULES says, with the BULK module of WORLD_PAYLOAD bytes if it sets one."""
    w = graph(
        n_modules=getattr(request.module, "WORLD_MODULES", 24),
        payload_bytes=getattr(request.module, "WORLD_PAYLOAD", 0),
        workdir=tmp_path_factory.mktemp("world"),
    )
    yield w
    w.close()
