"""What go's `direct` fetches ask a version-control host, told from the request alone.

When go fetches a module directly (GOPRIVATE/GONOPROXY, `GOPROXY=…,direct`), it first
asks the module path's host which repository serves it ("Finding a repository for a
module path": `GET https://<module path>?go-get=1`, answered with a `go-import` meta
tag), then runs git, which speaks the smart HTTP protocol (gitprotocol-http):

    GET  <repo>/info/refs?service=git-upload-pack   the refs           "vcs-refs"
    POST <repo>/git-upload-pack                     the packfile       "vcs-fetch"

and, on hosts that offer it, protocol v2 through the same two URLs. `module` is the
module path (discovery) or the repository's path as a module path would be written
(host + path, without `.git`): module rules judge either. A push (`git-receive-pack`)
or anything else on such a host is "vcs-other".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote

VcsKind = Literal["discovery", "vcs-refs", "vcs-fetch", "vcs-other"]
KINDS = ("discovery", "vcs-refs", "vcs-fetch", "vcs-other")

_REFS = "/info/refs"
_UPLOAD = "/git-upload-pack"


@dataclass(frozen=True)
class VcsRequest:
    kind: VcsKind
    module: str  # host/path as a module path; "" when the request names none
    error: str = ""  # why the request cannot be judged (refused)


def classify(method: str, host: str, path: str) -> VcsRequest:
    """`path` is the request target (path and query) as the client sent it."""
    raw, _, query = path.partition("?")
    where = unquote(raw).rstrip("/")
    if any(part in (".", "..") for part in where.split("/")) or "\\" in where:
        # A server may resolve them to another repository than the rules would judge.
        return VcsRequest("vcs-other", "", f"path {unquote(raw)!r} has '.' or '..' segments")
    params = dict(parse_qsl(query, keep_blank_values=True))
    host = host.lower().rstrip(".")
    if method == "GET" and params.get("go-get") == "1":
        return VcsRequest("discovery", _module(host, where))
    if method == "GET" and where.endswith(_REFS) and params.get("service") == "git-upload-pack":
        return VcsRequest("vcs-refs", _module(host, where.removesuffix(_REFS)))
    if method == "POST" and where.endswith(_UPLOAD):
        return VcsRequest("vcs-fetch", _module(host, where.removesuffix(_UPLOAD)))
    repo = where.split("/info/refs")[0].split("/git-receive-pack")[0]
    return VcsRequest("vcs-other", _module(host, repo))


def _module(host: str, path: str) -> str:
    path = "/".join(part for part in path.removesuffix(".git").split("/") if part)
    return f"{host}/{path}" if path else ""
