"""Shared fixtures. The test world (tests/world) is importable as `world` through
pytest's `pythonpath` setting in pyproject.toml."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from world.modules import World, graph


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The 24-module fixture graph, built once per test module (a module may override
    it with a smaller one)."""
    w = graph(workdir=tmp_path_factory.mktemp("world"))
    yield w
    w.close()
