"""Who is asking: authenticate every request against rules.yaml's `teams` (modgate.teams)
before anything else looks at it; part of modgate's addons (`all_addons()`: first).

- The HTTPS proxy: the CONNECT's `Proxy-Authorization` (go sends the user and password
  of `HTTPS_PROXY=http://USER:PASSWORD@host:port`); the tunnel's requests are that
  member's. A plain-HTTP proxy request carries its own. Refused: 407 with
  `Proxy-Authenticate`, the reason in the status text (go prints a CONNECT's status
  text, not its body).
- The GOPROXY endpoint (and transparent modes): each request's `Authorization` (go sends
  `.netrc` or GOAUTH credentials, over TLS only). Refused: 401 with `WWW-Authenticate`.

A refused request gets one line go prints, and nothing else: no stage after this one
sees it (the cache is not even asked, so a refusal says nothing of what is cached).
Accepted: `flow.metadata["modgate.identity"]` and `["modgate.team"]` hold the member and
team (strings; "" without teams), and the credentials header is removed, so no upstream
ever receives it. Two credentials headers are refused. Any exception here is a refusal
modgate wrote (the pipeline's 502): fail closed.

A tunnel is authenticated once, at its CONNECT; after a reload of the teams (a token
revoked, a password changed) its next request is checked again with the CONNECT's
credentials, so a revoked token does not live on in a kept-alive connection.

mitmproxy's own `proxyauth` option is the other way to ask for a password (one shared
user, or an htpasswd file, and no teams). `modgate run` refuses both at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from pathlib import Path

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from modgate.addons import plain
from modgate.addons.settings import Settings
from modgate.endpoint import FRONT
from modgate.errors import ModgateError
from modgate.teams import MISSING, Authenticator, Identity, Teams, Unauthenticated, load_teams_file

log = logging.getLogger("modgate")

IDENTITY = "modgate.identity"
TEAM = "modgate.team"
REALM = 'Basic realm="modgate", charset="UTF-8"'
POLL_SECONDS = 1.0
HASHES_AT_ONCE = 2  # password hashes checked at once: each takes a core for ~0.3 s


class AuthGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth: Authenticator | None = None
        self._from_config: Teams | None = None  # the Teams the rules file gave
        # Tunnels authenticated at their CONNECT: who, with what, under which Authenticator.
        self._tunnels: weakref.WeakKeyDictionary[
            connection.Client, tuple[Authenticator, list[str], Identity]
        ] = weakref.WeakKeyDictionary()
        self._hashing = asyncio.Semaphore(HASHES_AT_ONCE)
        self._watch: asyncio.Task[None] | None = None

    # --- which teams are in force -----------------------------------------------------------

    def current(self) -> Authenticator | None:
        """The teams in force (None: no teams), made anew when the rules or teams file
        changed: a new object, so what was decided under the old one is known stale."""
        return self._current()

    def _current(self) -> Authenticator | None:
        runtime = self.settings.runtime
        teams = runtime.config.teams if runtime is not None else None
        if teams is not self._from_config:  # the rules file was (re)loaded
            self._from_config = teams
            self._use(teams)
        return self.auth

    def _use(self, teams: Teams | None) -> None:
        self.auth = Authenticator(teams) if teams is not None else None
        if teams is not None:
            log.info("modgate: teams: %d teams, %d members", len(teams.teams), len(teams.members))
            if getattr(ctx.options, "proxyauth", None):
                # Only a reload gets here (configure refuses it at start): mitmproxy's
                # proxyauth takes the header first, and every request is then refused.
                log.error(
                    "modgate: proxyauth and rules.yaml's teams both ask for credentials: "
                    "every request is refused until one goes (restart without --set proxyauth)"
                )

    def configure(self, updated: set[str]) -> None:
        if "proxyauth" in updated or "modgate_rules" in updated:
            self._current()
            if self.auth is not None and getattr(ctx.options, "proxyauth", None):
                raise exceptions.OptionsError(
                    "proxyauth and rules.yaml's teams both ask for credentials: use one "
                    "(remove --set proxyauth, or the teams section)"
                )

    def running(self) -> None:
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._poll())

    async def done(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def _poll(self) -> None:
        """Re-read a teams file of its own when it changes (`modgate teams token ...`
        rewrites it); a broken one keeps the teams in force. No error stops this."""
        seen: tuple[int, int, int] | None = None
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                self._current()
                file = self.auth.teams.file if self.auth is not None else None
                if file is None:
                    seen = None
                    continue
                now = _signature(file)
                if now == seen:
                    continue
                # Read at the first poll too: the file may have changed between the
                # rules file's load and this watcher's start (a token made at once).
                seen = now
                teams = await asyncio.to_thread(load_teams_file, file)
                current = self.auth.teams if self.auth is not None else None
                if current is not None and teams.digest == current.digest:
                    continue  # touched, not changed
                if self._from_config is not None and self._from_config.file == file:
                    self._use(teams)
                    log.info("modgate: reloaded %s", file)
            except ModgateError as e:
                log.error("modgate: %s; the previous teams stay in force", e)
            except Exception as e:
                log.error("modgate: watching the teams file failed (%s: %s)", type(e).__name__, e)

    # --- requests -----------------------------------------------------------------------------

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        auth = self._current()
        flow.metadata[IDENTITY], flow.metadata[TEAM] = "", ""
        if auth is None or flow.response:
            return
        values = flow.request.headers.get_all("Proxy-Authorization")
        found = await self._check(auth, values)
        if isinstance(found, Unauthenticated):
            self._refuse(flow, found, proxy=True)
            return
        self._tunnels[flow.client_conn] = (auth, values, found)
        self._accept(flow, found)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        auth = self._current()
        flow.metadata[IDENTITY], flow.metadata[TEAM] = "", ""
        if auth is None or flow.response or flow.error:
            return
        tunnel = self._tunnels.get(flow.client_conn)
        if tunnel is not None:
            # Inside a tunnel its CONNECT authenticated: a header in the request itself
            # says nothing more (and is never forwarded).
            flow.request.headers.pop("Proxy-Authorization", None)
            was, values, identity = tunnel
            if was is not auth:  # the teams were reloaded since: check again
                found = await self._check(auth, values)
                if isinstance(found, Unauthenticated):
                    del self._tunnels[flow.client_conn]
                    self._refuse(flow, found, proxy=_is_proxy(flow))
                    return
                self._tunnels[flow.client_conn] = (auth, values, found)
                identity = found
            self._accept(flow, identity)
            return
        proxy = _is_proxy(flow)
        name = "Proxy-Authorization" if proxy else "Authorization"
        found = await self._check(auth, flow.request.headers.get_all(name))
        if isinstance(found, Unauthenticated):
            self._refuse(flow, found, proxy=proxy)
            return
        flow.request.headers.pop(name, None)  # never sent on to an upstream
        self._accept(flow, found)

    async def _check(self, auth: Authenticator, values: list[str]) -> Identity | Unauthenticated:
        found = auth.authenticate_fast(values)
        if found is not None:
            return found
        async with self._hashing:  # a password hash: off the event loop, a few at a time
            return await asyncio.to_thread(auth.authenticate, values)

    def _accept(self, flow: http.HTTPFlow, identity: Identity) -> None:
        flow.metadata[IDENTITY], flow.metadata[TEAM] = identity.name, identity.team

    def _refuse(self, flow: http.HTTPFlow, why: Unauthenticated, *, proxy: bool) -> None:
        message = f"modgate: {why.reason}: {_fix(why, proxy)}"
        flow.metadata["modgate.error"] = message
        if proxy:
            flow.response = plain(407, message, {"Proxy-Authenticate": REALM})
            if flow.request.method == "CONNECT":
                flow.response.reason = message.encode("ascii", "replace").decode()
        else:
            flow.response = plain(401, message, {"WWW-Authenticate": REALM})
        log.info("%s (%s)", message, flow.client_conn.peername)


def _fix(why: Unauthenticated, proxy: bool) -> str:
    if why.reason == MISSING:
        if proxy:
            return "give HTTPS_PROXY=http://USER:PASSWORD@HOST:PORT (a token as the password)"
        return "give credentials for this host in ~/.netrc, or GOAUTH"
    return "not served"


def _is_proxy(flow: http.HTTPFlow) -> bool:
    """Whether the client talks to modgate as to a proxy (Proxy-Authorization, 407) rather
    than as to a server (the GOPROXY endpoint, transparent modes: Authorization, 401)."""
    if flow.metadata.get(FRONT) == "endpoint":
        return False
    return isinstance(flow.client_conn.proxy_mode, mode_specs.RegularMode | mode_specs.UpstreamMode)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
