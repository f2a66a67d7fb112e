"""rules.schema.json, the schema editors check rules.yaml with, accepts every example
the project shows: the repo-root rules.yaml, its commented examples, and the README's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOP = (
    "proxies",
    "cache",
    "checksum",
    "mode",
    "hosts",
    "routes",
    "modules",
    "default",
    "teams",
    "owners",
    "store",
    "coordination",
)


def readme_examples() -> list[str]:
    """The ```yaml blocks of the README."""
    return re.findall(r"^```yaml\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)


def commented_examples() -> list[str]:
    """Each commented-out example of the repo-root rules.yaml (`# key:` and the `#   `
    lines under it), uncommented."""
    blocks: list[list[str]] = []
    inside = False
    for line in (ROOT / "rules.yaml").read_text().splitlines():
        if re.match(rf"# ({'|'.join(TOP)}):", line):
            blocks.append([])
            inside = True
        elif not (inside and (line.startswith("#   ") or line == "#")):
            inside = False
        if inside:
            blocks[-1].append(line[2:])
    return ["\n".join(b) + "\n" for b in blocks]


def examples() -> list[Any]:
    texts = [("rules.yaml", (ROOT / "rules.yaml").read_text())]
    texts += [(f"rules.yaml, commented example {i}", t) for i, t in enumerate(commented_examples())]
    texts += [(f"README.md, yaml block {i}", t) for i, t in enumerate(readme_examples())]
    return [pytest.param(yaml.safe_load(t), id=name) for name, t in texts]


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "rules.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_examples_are_found() -> None:
    shown = {k for e in examples() for k in (e.values[0] or {})}
    assert shown == set(TOP)  # every top-level key has an example somewhere


@pytest.mark.parametrize("example", examples())
def test_every_example_the_project_shows_is_valid(validator: Any, example: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example)]
    assert not errors, errors


@pytest.mark.parametrize(
    "bad",
    [
        {"checksum": {"databases": [{"url": "https://sumdb.example"}]}},  # no key
        {"checksum": {"databases": [{"key": "k", "mirror": "https://x"}]}},  # unknown field
        {"checksum": {"databases": [{"key": "k", "url": "ftp://x"}]}},
        {"checksum": {"pins": "m v1.0.0 h1:x="}},
        {"checksum": {"sums": []}},
        {"store": {"s3": {"endpoint": "http://AK:secret@s3.example", "bucket": "b"}}},
        {"store": {"s3": {"bucket": "b"}}},  # no endpoint
        {"coordination": {"redis": {"url": "redis://r.example", "password": "p"}}},
    ],
)
def test_the_schema_still_refuses_what_the_parser_refuses(validator: Any, bad: Any) -> None:
    assert not validator.is_valid(bad)
