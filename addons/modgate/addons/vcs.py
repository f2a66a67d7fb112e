"""go's `direct` fetches from the version-control hosts in `hosts.vcs`: told apart
(discovery, git refs, git fetch: vcs.py), held to the module rules (RulesGate), counted
and traced; part of modgate's addons (`all_addons()`).

Those hosts are intercepted (Settings adds them to mitmproxy's `allow_hosts`), so each
request is seen. Should a connection to one be passed through uninspected all the same
(a host spelled so that the interception pattern misses it), it is closed instead: a
`hosts.vcs` host is reached inspected or not at all. Git packs stream through, counted,
never cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import http
from mitmproxy.proxy import layer, layers

from modgate.addons import plain
from modgate.addons.settings import Settings
from modgate.addons.transparent import close_connection
from modgate.config import normal_host
from modgate.vcs import VcsRequest, classify

log = logging.getLogger("modgate")
VCS = "modgate.vcs"  # flow.metadata: the VcsRequest
BYTES_OUT = "modgate.bytes_out"  # flow.metadata: bytes of a streamed body sent on


class VcsGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        runtime, address = self.settings.runtime, nextlayer.context.server.address
        if runtime is None or address is None or not isinstance(nextlayer.layer, layers.TCPLayer):
            return
        host, port = normal_host(str(address[0])), int(address[1])
        if runtime.config.rules.vcs_host(host, port) is not None:
            log.error(
                "modgate: %s:%d is a hosts.vcs host but was not intercepted: closed", host, port
            )
            close_connection(nextlayer)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        runtime = self.settings.runtime
        if flow.response or flow.error or runtime is None or "modgate.proxy" in flow.metadata:
            return
        host, port = normal_host(flow.request.host), flow.request.port
        if runtime.config.rules.vcs_host(host, port) is None:
            return
        req: VcsRequest = classify(flow.request.method, host, flow.request.path)
        flow.metadata[VCS] = req
        if req.error:
            flow.response = plain(400, f"modgate: refused {flow.request.url}: {req.error}")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if VCS in flow.metadata and flow.response is not None and not flow.response.stream:
            flow.metadata[BYTES_OUT] = 0
            flow.response.stream = _counter(flow)


def _counter(flow: http.HTTPFlow) -> Callable[[bytes], bytes]:
    def count(chunk: bytes) -> bytes:
        flow.metadata[BYTES_OUT] += len(chunk)
        return chunk

    return count
