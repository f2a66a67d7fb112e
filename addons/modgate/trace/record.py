"""One trace record: a request that passed through modgate, as it went.

Times are Unix seconds (floats) as mitmproxy stamps them. Strings that do not apply
are "", numbers that were not measured are None. `kind` is a `goproxy.Kind` value
("list", "info", "mod", "zip", "latest", "sumdb-supported", "sumdb-lookup",
"sumdb-tile", "sumdb-latest"), a direct fetch from a `hosts.vcs` host ("discovery",
"vcs-refs", "vcs-fetch", "vcs-other": vcs.py), "tunnel" for a CONNECT tunnel (or a
redirected connection) modgate passed through untouched or refused, or "other" for any
other request.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from dataclasses import dataclass
from typing import Any

TUNNEL = "tunnel"
OTHER = "other"

# Cache outcomes (X-Modgate-Cache) and where the body came from.
FROM_CACHE = frozenset({"hit", "negative", "stale"})
FROM_UPSTREAM = frozenset({"miss", "refreshed"})
# Hash verdicts under which modgate did not serve the artifact.
REFUSED_HASHES = frozenset({"mismatch", "refused"})


@dataclass(frozen=True, slots=True)
class Record:
    start: float  # the request's first byte arrived
    end: float  # the response's last byte went out, or the flow failed
    ttfb: float | None  # seconds from `start` to the response's first byte
    client: str  # client IP address
    client_port: int
    method: str
    scheme: str  # "https", "http", or "tcp" for a tunnel
    host: str  # as the client asked (not where modgate sent it)
    port: int
    path: str  # as the client asked, query included
    kind: str
    module: str = ""  # decoded: "github.com/BurntSushi/toml", not "!burnt!sushi"
    version: str = ""
    status: int = 0  # 0: no response
    bytes_in: int | None = None  # request head and body, client to modgate
    bytes_out: int | None = None  # response body, modgate to client
    cache: str = ""  # hit | negative | miss | refreshed | stale
    upstream: str = ""  # the upstream that gave the answer (for a hit: the stored one's)
    attempts: tuple[str, ...] = ()  # "url: status-or-error", each upstream tried now
    hash_verdict: str = ""  # verified | mismatch | unverified | ...
    hash_source: str = ""  # sumdb | pin | go.sum | ...
    h1: str = ""  # the "h1:" hash of what was served (zip: the module, mod: its go.mod)
    rule_verdict: str = ""  # allow | deny | audit-deny
    rule: str = ""  # which rule decided, e.g. "modules[3]"
    rule_reason: str = ""
    error: str = ""
    session: int = 0  # set by the writer
    id: int = 0  # set by the database
    # Who asked, where the client's address does not say: "go[1234]" (the process on this
    # machine at the other end of the connection: peers.py) or "tag NAME" (`modgate env
    # --session NAME`). Sessions are one per origin (trace/sessions.py). Last, so journal
    # lines written before it still read.
    origin: str = ""
    # Who asked, as rules.yaml's teams know them (AuthGate: flow.metadata["modgate.identity"]
    # and ["modgate.team"]); "" without teams, or when the request was not authenticated.
    identity: str = ""
    team: str = ""

    @property
    def refused(self) -> bool:
        """modgate refused it: a rule denied it, or its hash did not check out."""
        return self.rule_verdict == "deny" or self.hash_verdict in REFUSED_HASHES

    @property
    def refusal(self) -> str:
        """Why modgate refused it, "" when it did not. A hash refusal names the hash
        verdict and its reason: the rule that let the request through (often `default`)
        is not why it was refused."""
        if self.rule_verdict == "deny":
            return self.rule_reason or self.rule or "denied by a rule"
        if self.hash_verdict in REFUSED_HASHES:
            return f"hash: {self.error}" if self.error else f"hash {self.hash_verdict}"
        return ""

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def target(self) -> str:
        """What was asked for, in a few words: module@version, module, host:port or path."""
        if self.kind == TUNNEL:
            return f"{self.host}:{self.port}"
        if self.module and self.version:
            return f"{self.module}@{self.version}"
        return self.module or self.path

    @property
    def url(self) -> str:
        if self.kind == TUNNEL:
            return f"{self.host}:{self.port}"
        default = {"https": 443, "http": 80}.get(self.scheme)
        netloc = self.host if self.port == default else f"{self.host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"

    def replace(self, **changes: Any) -> Record:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in COLUMNS}
        out["attempts"] = list(self.attempts)
        out["refused"] = self.refused
        return out


# The stored columns, in table order.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Record))


_INSERTED = [c for c in COLUMNS if c != "id"]
_VALUES = operator.attrgetter(*_INSERTED)  # one C call: this runs for every request
_ATTEMPTS, _SESSION = _INSERTED.index("attempts"), _INSERTED.index("session")


def to_row(record: Record, session: int | None = None) -> list[Any]:
    """The values for an INSERT of COLUMNS without `id`, then `refused`; `session`
    overrides the record's own."""
    values = list(_VALUES(record))
    values[_ATTEMPTS] = json.dumps(record.attempts)
    if session is not None:
        values[_SESSION] = session
    values.append(int(record.refused))
    return values


def from_row(row: Any) -> Record:
    """A Record from a database row selected as COLUMNS (sqlite3.Row or a sequence)."""
    values = dict(zip(COLUMNS, tuple(row)[: len(COLUMNS)], strict=True))
    values["attempts"] = tuple(json.loads(values["attempts"] or "[]"))
    return Record(**values)
