"""The test world: module fixtures, a misbehaving module proxy, and the go command.

Tests import it as `from world import World, ModuleVersion, graph, Upstream, go_env`.
"""

from .gocmd import GoCommandError, find_go, go_env, json_objects, run_go, shared_gocache
from .modules import (
    BULK,
    DOMAIN,
    MAJOR_V2,
    UPPER,
    MainModule,
    ModuleVersion,
    World,
    escape,
    graph,
    graph_roots,
    is_pseudo,
    proxy_path,
    semver_key,
    write_main_module,
)
from .upstream import CONTENT_TYPES, Fault, FaultRule, Resource, Upstream

__all__ = [
    "BULK",
    "CONTENT_TYPES",
    "DOMAIN",
    "MAJOR_V2",
    "UPPER",
    "Fault",
    "FaultRule",
    "GoCommandError",
    "MainModule",
    "ModuleVersion",
    "Resource",
    "Upstream",
    "World",
    "escape",
    "find_go",
    "go_env",
    "graph",
    "graph_roots",
    "is_pseudo",
    "json_objects",
    "proxy_path",
    "run_go",
    "semver_key",
    "shared_gocache",
    "write_main_module",
]
