"""prefetch.py: what a go.sum, module@version lines, a go.work and a go.mod's go line ask for."""

from __future__ import annotations

from pathlib import Path

import pytest

from modgate.errors import ModgateError
from modgate.prefetch import Want, from_go_sum, from_lines, toolchains, workspace_modules


def test_go_sum_lines_name_versions_and_go_mod_only_ones() -> None:
    text = (
        "example.com/a v1.0.0 h1:AAA=\n"
        "example.com/a v1.0.0/go.mod h1:BBB=\n"
        "example.com/b v0.9.0/go.mod h1:CCC=\n"
        "garbage\n"
    )
    assert from_go_sum(text) == {Want("example.com/a", "v1.0.0"),
                                 Want("example.com/b", "v0.9.0", gomod_only=True)}  # fmt: skip


def test_module_at_version_lines() -> None:
    assert from_lines("# tools\nexample.com/a@v1.0.0\n\nexample.com/b@v2.0.0 # pinned\n") == {
        Want("example.com/a", "v1.0.0"), Want("example.com/b", "v2.0.0")}  # fmt: skip
    with pytest.raises(ModgateError, match=r"line 2: 'example.com/b' is not module@version"):
        from_lines("example.com/a@v1\nexample.com/b\n")


def test_workspace_use_directives(tmp_path: Path) -> None:
    (tmp_path / "go.work").write_text('go 1.22\n\nuse ./a\nuse (\n\t./b // tools\n\t"./c d"\n)\n')
    assert workspace_modules(tmp_path / "go.work") == [
        (tmp_path / d).resolve() / "go.mod" for d in ("a", "b", "c d")]  # fmt: skip


@pytest.mark.parametrize(
    ("gomod", "want"),
    [
        ("module m\n\ngo 1.22.3\n", "v0.0.1-go1.22.3.linux-amd64"),
        ("module m\n\ngo 1.21.0\ntoolchain go1.22.5\n", "v0.0.1-go1.22.5.linux-amd64"),
        ("module m\n\ngo 1.20\n", None),  # a language version: no toolchain named
    ],
)  # fmt: skip
def test_the_toolchain_a_go_mod_names(tmp_path: Path, gomod: str, want: str | None) -> None:
    (tmp_path / "go.mod").write_text(gomod)
    found = toolchains(tmp_path / "go.mod", "linux", "amd64")
    assert found == ({Want("golang.org/toolchain", want)} if want else set())
