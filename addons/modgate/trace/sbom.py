"""A CycloneDX SBOM of the module versions a session downloaded, written with
cyclonedx-python-lib and checked against its JSON schema before it is written.

A module version is in it when the session was served its zip (status 200, not
refused): what `go` unpacks into its module cache. Each is a library component with
its `pkg:golang/...` purl and, as properties, the go.sum hashes modgate saw:

    modgate:h1            the zip's "h1:" hash (go.sum "<module> <version> h1:...")
    modgate:h1:go.mod     the go.mod's hash, when the session fetched it
    modgate:hash:verdict  what the checksum verification said, and modgate:hash:source
    modgate:cache         how modgate answered (hit, miss, ...); modgate:upstream
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from modgate import __version__
from modgate.trace.record import Record
from modgate.trace.store import SessionSummary, TraceError

if TYPE_CHECKING:
    from cyclonedx.validation.json import JsonStrictValidator

SCHEMA = SchemaVersion.V1_6


@dataclass(frozen=True)
class Downloaded:
    module: str
    version: str
    zip: Record
    mod: Record | None

    @property
    def purl(self) -> PackageURL:
        namespace, _, name = self.module.rpartition("/")
        return PackageURL(
            type="golang", namespace=namespace or None, name=name, version=self.version
        )


def downloaded(records: Sequence[Record]) -> list[Downloaded]:
    """The module versions whose zip the session was served whole, sorted by module and
    version. A large zip streams with status 200 before its hash is known: one that
    ended with an error (failed its check, client went away) was not downloaded."""
    zips: dict[tuple[str, str], Record] = {}
    mods: dict[tuple[str, str], Record] = {}
    for r in records:
        if r.status != 200 or r.refused or r.error or not r.module or not r.version:
            continue
        if r.kind == "zip":
            zips.setdefault((r.module, r.version), r)
        elif r.kind == "mod":
            mods.setdefault((r.module, r.version), r)
    return [Downloaded(m, v, zips[(m, v)], mods.get((m, v))) for m, v in sorted(zips)]


def _properties(d: Downloaded) -> list[Property]:
    values = [
        ("modgate:h1", d.zip.h1),
        ("modgate:h1:go.mod", d.mod.h1 if d.mod else ""),
        ("modgate:hash:verdict", d.zip.hash_verdict),
        ("modgate:hash:source", d.zip.hash_source),
        ("modgate:cache", d.zip.cache),
        ("modgate:upstream", d.zip.upstream),
    ]
    return [Property(name=name, value=value) for name, value in values if value]


def bom(session: SessionSummary, records: Sequence[Record]) -> Bom:
    result = Bom()
    started = records[0].start if records else session.started
    result.metadata.timestamp = datetime.fromtimestamp(started, UTC)
    result.metadata.component = Component(
        type=ComponentType.APPLICATION,
        name=session.label or f"modgate trace session {session.id}",
        description=f"module versions downloaded through modgate {__version__}, session "
        f"{session.id}, client {session.client}",
    )
    result.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="modgate", version=__version__)
    )
    downloads = []
    for d in downloaded(records):
        purl = d.purl
        downloads.append(
            Component(
                type=ComponentType.LIBRARY,
                name=d.module,
                version=d.version,
                purl=purl,
                bom_ref=purl.to_string(),
                properties=_properties(d),
            )
        )
    result.components.update(downloads)
    # The session needed each module version it downloaded; how they depend on one
    # another is go's module graph, which the trace does not see.
    result.register_dependency(result.metadata.component, downloads)
    return result


def validator() -> JsonStrictValidator:
    """cyclonedx-python-lib's strict JSON validator for SCHEMA.

    jsonschema checks the "iri-reference" format with the optional package
    rfc3987_syntax, which builds a parser at import: about 3 s of CPU, each time the
    command runs. modgate's SBOMs hold no IRI (no URLs, no external references), so
    that one check is left out when nothing has imported jsonschema yet: jsonschema
    then skips the format, as it does whenever the package is not installed.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SCHEMA)


def sbom_json(session: SessionSummary, records: Sequence[Record]) -> str:
    """The SBOM as CycloneDX 1.6 JSON, validated against the schema (TraceError if not)."""
    text = make_outputter(bom(session, records), OutputFormat.JSON, SCHEMA).output_as_string(
        indent=2
    )
    error = validator().validate_str(text)
    if error is not None:
        raise TraceError(
            f"the SBOM does not validate against CycloneDX {SCHEMA.to_version()}: {error}"
        )
    return text + "\n"
