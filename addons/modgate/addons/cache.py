"""Answer module-proxy requests from modgate's store, fetching from the upstream chain
on a miss; part of modgate's addons (`all_addons()`).

Small bodies are answered from memory. Large ones (stored, or still downloading) go
through the loopback BlobServer (blobs.py), which holds back their end until their hash
is known to match:
  - a client on this machine is redirected to it (`modgate_redirect_local`) and fetches
    the body itself, at disk speed; the flow's trace record waits for that transfer
    (`Handoff`);
  - any other client gets it through mitmproxy: the flow is pointed at the BlobServer
    and the response is marked for streaming, because mitmproxy streams only bodies it
    receives from a server.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import logging

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from modgate.addons import answer, plain
from modgate.addons.settings import Settings
from modgate.blobs import Handoff, Transfer
from modgate.config import Chain
from modgate.endpoint import FRONT
from modgate.errors import CacheError, UpstreamError
from modgate.gateway import Outcome, Served
from modgate.goproxy import ModRequest
from modgate.growing import GrowingFile
from modgate.upstream import came_back
from modgate.verify import IntegrityError

log = logging.getLogger("modgate")


class CacheGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "modgate_redirect_local", bool, True,
            "Send large bodies to clients on this machine by redirecting them to modgate's "
            "loopback file server, rather than through the proxy (several times faster).",
        )  # fmt: skip

    async def request(self, flow: http.HTTPFlow) -> None:
        req: ModRequest | None = flow.metadata.get("modgate.request")
        chain: Chain | None = flow.metadata.get("modgate.chain")
        if req is None or chain is None or flow.response or flow.error:
            return
        runtime = self.settings.runtime
        if runtime is None:
            flow.response = plain(503, "modgate: not configured yet")
            return
        if came_back(flow.request.headers.get_all("Via")):
            flow.metadata["modgate.error"] = "loop: modgate's own upstream request came back"
            flow.response = plain(
                508, "modgate: this request came back from modgate's own upstream fetch: an "
                "upstream (or its redirect) leads back to modgate; fix that upstream URL",
            )  # fmt: skip
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
        if served.outcome is Outcome.HIT:
            flow.metadata["modgate.entry"] = served.entry  # FastHitGate keeps such answers
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
            data = body.data
            if entry.status == 200 and _gzip_wanted(flow, entry.content_type, len(data)):
                data = _gzipped(entry.sha256, data)
                headers["Content-Encoding"], headers["Vary"] = "gzip", "Accept-Encoding"
            flow.response = answer(entry.status, data, headers)
            return
        assert body.file is not None
        blobs, loop = self.settings.blobs, asyncio.get_running_loop()
        gateway = self.settings.runtime.gateway if self.settings.runtime else None
        chain, req = flow.metadata["modgate.chain"], flow.metadata["modgate.request"]
        if served.growing is not None:
            flow.metadata["modgate.growing"] = served.growing
        port = _redirect_port(flow, blobs.port, blobs.tls_port)
        handoff = Handoff() if port else None

        def damaged() -> None:  # on the transfer's thread
            if gateway is not None:  # under whichever key it is kept
                loop.call_soon_threadsafe(gateway.forget, chain, req)

        def done(transfer: Transfer) -> None:  # on the transfer's thread
            loop.call_soon_threadsafe(self._transferred, flow, handoff, transfer)

        blob_path = blobs.offer(
            body.file, entry.size, entry.sha256, headers,
            growing=served.growing, on_damage=damaged, on_done=done,
        )  # fmt: skip
        flow.metadata["modgate.blob"] = blob_path
        if handoff is not None:
            scheme = "https" if port == blobs.tls_port else "http"
            flow.metadata["modgate.handoff"] = handoff
            flow.response = http.Response.make(
                307, b"", {"Location": f"{scheme}://127.0.0.1:{port}{blob_path}",
                           "X-Modgate-Cache": served.outcome.value},
            )  # fmt: skip
            return
        flow.request.scheme, flow.request.port = "http", blobs.port
        flow.request.host, flow.request.path = "127.0.0.1", blob_path

    def _transferred(self, flow: http.HTTPFlow, handoff: Handoff | None, done: Transfer) -> None:
        """A BlobServer transfer ended: what it served goes into the flow's metadata."""
        _settled(flow)
        if done.error:  # e.g. "not served: SECURITY: …", "client went away: …"
            flow.metadata["modgate.error"] = done.error
        if handoff is not None:
            handoff.ended(done)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        streamed = "modgate.blob" in flow.metadata and "modgate.handoff" not in flow.metadata
        if streamed and flow.response is not None:
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        _settled(flow)  # streamed through mitmproxy: the body is all out

    def error(self, flow: http.HTTPFlow) -> None:
        if "modgate.blob" in flow.metadata:
            self.settings.blobs.withdraw(flow.metadata["modgate.blob"])
            growing: GrowingFile | None = flow.metadata.get("modgate.growing")
            if growing is not None and growing.error:
                flow.metadata["modgate.error"] = f"not served: {growing.error}"
            _settled(flow)


# Text answers (lists, .info, .mod, @latest, lookups) at least this large go out gzipped
# to a client that accepts it (go always does, and decodes it itself); zips and tiles
# never: they do not shrink. Compressed once per body, kept by its SHA-256.
GZIP_MIN = 512
GZIP_TYPES = ("text/", "application/json")
_GZIPPED: dict[str, bytes] = {}
_GZIPPED_MAX = 1024


def _gzip_wanted(flow: http.HTTPFlow, content_type: str, size: int) -> bool:
    if size < GZIP_MIN or not content_type.startswith(GZIP_TYPES):
        return False
    accepted = flow.request.headers.get("Accept-Encoding", "")
    for item in accepted.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _gzipped(sha256: str, data: bytes) -> bytes:
    found = _GZIPPED.get(sha256)
    if found is None:
        found = gzip.compress(data, compresslevel=6, mtime=0)
        if len(_GZIPPED) >= _GZIPPED_MAX:
            _GZIPPED.pop(next(iter(_GZIPPED)))
        _GZIPPED[sha256] = found
    return found


def _settled(flow: http.HTTPFlow) -> None:
    """A zip served while it downloaded: its hashes are known once it settled, or it
    failed its checks (its clients were cut short: the trace says why)."""
    growing: GrowingFile | None = flow.metadata.get("modgate.growing")
    if growing is not None and growing.refused:
        flow.metadata["modgate.hash"] = {"verdict": "refused", "reason": growing.error or ""}
    elif growing is not None and growing.entry is not None and growing.entry.h1:
        entry = growing.entry
        flow.metadata["modgate.hash"] = {
            "verdict": entry.verdict, "source": entry.checked_by, "h1": entry.h1,
        }  # fmt: skip


def _redirect_port(flow: http.HTTPFlow, port: int, tls_port: int) -> int:
    """The BlobServer port to redirect `flow`'s client to, or 0 to stream through
    mitmproxy: only clients on this machine can reach a loopback server, and a client
    that asked over TLS is sent to TLS (go refuses a redirect from https to http)."""
    if not ctx.options.modgate_redirect_local or not flow.client_conn.peername:
        return 0
    if flow.metadata.get(FRONT):  # the lean GOPROXY endpoint sends the body itself
        return 0
    try:
        ip = ipaddress.ip_address(flow.client_conn.peername[0])
    except ValueError:
        return 0
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not ip.is_loopback:
        return 0
    return tls_port if flow.client_conn.tls_established else port
