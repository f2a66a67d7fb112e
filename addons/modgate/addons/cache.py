"""Answer module-proxy requests from modgate's store, fetching from the upstream chain
on a miss; part of modgate's addons (`all_addons()`).

Small bodies are answered from memory. Large ones are streamed: the flow is pointed at
the loopback BlobServer, which sends the stored file, and the response is marked for
streaming, because mitmproxy streams only bodies it receives from a server.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from modgate.addons import plain
from modgate.addons.settings import Settings
from modgate.config import Chain
from modgate.errors import CacheError, UpstreamError
from modgate.gateway import Outcome, Served
from modgate.goproxy import ModRequest
from modgate.verify import IntegrityError

log = logging.getLogger("modgate")


class CacheGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def request(self, flow: http.HTTPFlow) -> None:
        req: ModRequest | None = flow.metadata.get("modgate.request")
        chain: Chain | None = flow.metadata.get("modgate.chain")
        if req is None or chain is None or flow.response or flow.error:
            return
        runtime = self.settings.runtime
        if runtime is None:
            flow.response = plain(503, "modgate: not configured yet")
            return
        try:
            served = await runtime.gateway.serve(chain, req)
        except UpstreamError as e:
            flow.metadata["modgate.error"] = str(e)
            flow.response = plain(502, f"modgate: {e}")
            return
        except IntegrityError as e:
            # Refused before it reached the store or the client: say so loudly.
            log.error("modgate: %s", e)
            flow.metadata["modgate.error"] = str(e)
            flow.metadata["modgate.hash"] = {"verdict": "refused", "reason": str(e)}
            flow.response = plain(502, f"modgate: {e}")
            return
        except CacheError as e:
            log.error("modgate: %s", e)
            flow.metadata["modgate.error"] = str(e)
            flow.response = plain(503, f"modgate: {e}")
            return
        flow.metadata["modgate.cache"] = served.outcome.value
        flow.metadata["modgate.upstream"] = served.entry.upstream
        if served.entry.h1:
            flow.metadata["modgate.hash"] = {
                "verdict": served.entry.verdict,
                "source": served.entry.checked_by,
                "h1": served.entry.h1,
            }
        if served.attempts:
            flow.metadata["modgate.attempts"] = [str(a) for a in served.attempts]
        self._answer(flow, served)

    def _answer(self, flow: http.HTTPFlow, served: Served) -> None:
        entry, body = served.entry, served.body
        headers = {"Content-Type": entry.content_type, "X-Modgate-Cache": served.outcome.value}
        if entry.h1:
            headers["X-Modgate-Hash"] = f"{entry.h1} {entry.verdict} by {entry.checked_by}"
        if served.outcome is Outcome.STALE:
            headers["Warning"] = '110 modgate "Response is Stale"'
            headers["X-Modgate-Stale-Reason"] = " ".join(served.stale_reason.split())[:300]
        if body.data is not None:
            flow.response = http.Response.make(entry.status, body.data, headers)
            return
        assert body.file is not None
        store = self.settings.runtime.store if self.settings.runtime else None
        blob_path = self.settings.blobs.offer(
            body.file, entry.size, entry.sha256, headers,
            on_damage=lambda: store.delete(entry.key) if store else None,
        )  # fmt: skip
        flow.metadata["modgate.blob"] = blob_path
        flow.request.scheme, flow.request.port = "http", self.settings.blobs.port
        flow.request.host, flow.request.path = "127.0.0.1", blob_path

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if "modgate.blob" in flow.metadata and flow.response is not None:
            flow.response.stream = True

    def error(self, flow: http.HTTPFlow) -> None:
        if "modgate.blob" in flow.metadata:
            self.settings.blobs.withdraw(flow.metadata["modgate.blob"])
