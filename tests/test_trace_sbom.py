"""The SBOM: the module versions a session was served the zip of, valid CycloneDX."""

from __future__ import annotations

import json

import pytest

from modgate.trace.sbom import downloaded, sbom_json, validator
from modgate.trace.store import TraceError
from traceworld import download, rec, summary


def test_it_lists_each_downloaded_module_version_once_with_its_hashes() -> None:
    records = [
        *download(h1="h1:zip=", hash_verdict="verified", hash_source="sumdb"),
        rec(1.0, kind="zip", module="example.com/a", version="v1.2.0", h1="h1:again="),
        rec(1.1, kind="mod", module="example.com/only-mod", h1="h1:m="),  # no zip: not in it
        rec(1.2, kind="zip", module="example.com/denied", rule_verdict="deny", status=403),
        rec(1.3, kind="zip", module="example.com/gone", status=404, cache="negative"),
    ]
    assert [(d.module, d.version) for d in downloaded(records)] == [
        ("example.com/B", "v0.3.1"), ("example.com/a", "v1.2.0"),
    ]  # fmt: skip
    doc = json.loads(sbom_json(summary(records, label="release"), records))
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    assert doc["metadata"]["component"]["name"] == "release"
    [b, a] = doc["components"]
    assert a["purl"] == "pkg:golang/example.com/a@v1.2.0" == a["bom-ref"]
    assert b["purl"] == "pkg:golang/example.com/B@v0.3.1"
    assert {p["name"]: p["value"] for p in a["properties"]} == {
        "modgate:h1": "h1:zip=",  # the first zip the session was served
        "modgate:h1:go.mod": "h1:zip=",
        "modgate:hash:verdict": "verified",
        "modgate:hash:source": "sumdb",
        "modgate:cache": "miss",
        "modgate:upstream": "https://mirror.example",
    }
    [root] = [d for d in doc["dependencies"] if d["ref"] == doc["metadata"]["component"]["bom-ref"]]
    assert sorted(root["dependsOn"]) == sorted([a["bom-ref"], b["bom-ref"]])


def test_an_empty_session_is_a_valid_empty_sbom() -> None:
    doc = json.loads(sbom_json(summary([]), []))
    assert doc.get("components", []) == []


def test_an_invalid_document_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from cyclonedx.output.json import Json

    monkeypatch.setattr(Json, "output_as_string", lambda self, **kw: '{"bomFormat": "nope"}')
    with pytest.raises(TraceError, match="does not validate against CycloneDX 1.6"):
        sbom_json(summary([]), [])
    assert validator().validate_str('{"bomFormat": "CycloneDX", "specVersion": "1.6"}') is None


def test_a_zip_cut_short_is_not_a_download() -> None:
    """A large zip streams with status 200 before its hash is known; one that failed
    its check (or whose client went away) ended with an error and never reached the
    client's module cache whole: the SBOM must not claim it."""
    cut = "not served: SECURITY: example.com/bulk@v1.0.0: upstream sent h1:A=, but go.sum says"
    records = [
        rec(0.0, kind="zip", module="example.com/bulk", status=200, error=cut),
        rec(0.1, kind="zip", module="example.com/left", status=200, error="client went away"),
        rec(0.2, kind="zip", module="example.com/whole", status=200),
    ]
    assert [d.module for d in downloaded(records)] == ["example.com/whole"]
