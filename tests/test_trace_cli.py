"""`modgate trace …` on a database the writer filled: output, files and exit statuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modgate.cli import main
from traceworld import download, filled, rec


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "trace.db"
    records = [*download(), *download(start=60.0, cache="hit")]
    records.append(rec(60.5, kind="zip", module="example.com/bad", status=403, cache="",
                       rule_verdict="deny", rule_reason="blocked"))  # fmt: skip
    filled(path, records).close()
    return path


def run(db: Path, *args: str) -> int:
    return main(["trace", *args, "--db", str(db)])


def test_ls_and_show(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(db, "ls") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ID", "1", "2"]
    assert lines[2].split()[-2:] == ["1", "0"]  # one refusal, no errors
    assert run(db, "last") == 0
    text = capsys.readouterr().out
    assert text.startswith("session 2 · client 127.0.0.1")
    assert "refused:  example.com/bad@v1.0.0 (zip): blocked" in text
    assert run(db, "show", "1", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["session"]["id"] == 1 and len(doc["requests"]) == 10
    assert run(db, "ls", "--json", "-n", "1") == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)] == [2]


def test_labels_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "new" / "trace.db"
    assert run(db, "start", "nightly build") == 0
    assert "session 1 'nightly build' started" in capsys.readouterr().out
    assert run(db, "stop") == 0
    assert "session 1 'nightly build' stopped" in capsys.readouterr().out
    assert run(db, "stop") == 1  # nothing was open
    assert run(db, "ls") == 0
    assert "nightly build" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "7"], "no session 7 in"),
        (["show", "first"], "'first' is not a session ID"),
        (["waterfall", "1", "-o", "w.svg", "-o", "w.jpg"], "w.jpg: write a .svg, .png or .html"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    db: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(db, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("modgate: ") and message in err and err.count("\n") == 1


def test_no_database_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path / "none.db", "ls") == 2
    err = capsys.readouterr().err
    assert "no trace database at" in err and "give the same --cache-dir, or --db FILE" in err
    assert not (tmp_path / "none.db").exists()  # reading never creates it


def test_every_export_writes_its_file(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert run(db, "export", "1", "--har", str(out / "s.har")) == 0
    assert run(db, "export", "last", "--flows", str(out / "s.flows")) == 0
    assert run(db, "waterfall", "1", "-o", str(out / "w.svg"), "-o", str(out / "w.png")) == 0
    assert run(db, "sbom", "1", "-o", str(out / "sbom.json")) == 0
    assert run(db, "sequence", "1", "-o", str(out / "s.mmd")) == 0
    printed = capsys.readouterr().out
    assert "wrote 10 requests of session 1" in printed
    assert "wrote an SBOM of 2 module versions (2 without an h1 hash)" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "s.flows", "s.har", "s.mmd", "sbom.json", "w.png", "w.svg",
    ]  # fmt: skip
    assert run(db, "sbom", "1") == 0  # to standard output
    assert json.loads(capsys.readouterr().out)["bomFormat"] == "CycloneDX"
    assert run(db, "sequence", "1") == 0
    assert capsys.readouterr().out.startswith("sequenceDiagram\n")
