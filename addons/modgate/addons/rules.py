"""Enforce the policy of rules.yaml (`modgate.rules`); part of modgate's addons
(`all_addons()`: after Router, before CacheGate).

- A CONNECT, or a plain-HTTP proxy request, to a host the rules do not allow gets a 403.
- A module version the rules refuse gets a 403 on its `.zip` (the code), with a one-line
  text/plain body go prints after "server response:". Never 404/410: after a `,` in
  GOPROXY those make go try the next entry, `direct` included. Its `.info` and `.mod`
  are served: go reads the go.mod of many versions it never builds. A module refused
  whatever the version gets a 403 on every request (list, @latest, .info, .mod, .zip).
- `@v/list` answers are filtered to the allowed versions and an `@latest` naming a
  refused version is answered with the newest allowed one, so `go get m@latest` and
  `go get -u` pick what may be used instead of failing.
- Checksum-database lookups are refused only for a module path `owners` keeps from the
  requester's team: they carry no code, and a client may verify a go.sum line for a
  module it already has.
- Teams (`flow.metadata["modgate.team"]`, set by AuthGate): rules naming teams apply to
  theirs only; a path `owners` keeps from the team is refused on every request with the
  owner's 403 or 404, by its path alone, before the cache or any upstream is asked.
- In audit mode nothing is refused or filtered; each would-be refusal is logged as a
  warning and recorded.

Every decision goes into `flow.metadata["modgate.rule"]` as
{"verdict": "allow" | "deny" | "audit-deny", "rule": "modules[4]", "reason": "..."}.
The rules file is polled every second and read once it settles; a valid change applies
to the next request, all or nothing. A broken one, one that fails to apply, or one that
would drop every rule by accident (`modgate.rulesfile.may_replace`) is logged and the
rules in force stay; no error stops the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, assert_never

from mitmproxy import ctx, http

from modgate.addons import plain
from modgate.addons.settings import Runtime, Settings
from modgate.addons.vcs import VCS
from modgate.config import Chain, config_from_bytes, normal_host
from modgate.errors import CacheError, ConfigError, ModgateError
from modgate.gateway import Outcome, Served
from modgate.gomod import Retraction, parse_gomod
from modgate.goproxy import Kind, ModRequest, escape, parse_request
from modgate.rules import Allow, Decision, Deny, Mode, Rules, latest_of, refusal_message
from modgate.rulesfile import Keep, Replace, digest, may_replace
from modgate.vcs import VcsRequest

log = logging.getLogger("modgate")

POLL_SECONDS = 1.0
# An edit is applied once two reads this far apart agree, after at most SETTLE_TRIES
# reads: editors write a file in one go, or rename a complete one into place.
SETTLE_SECONDS = 0.1
SETTLE_TRIES = 20
RULE = "modgate.rule"


class RulesGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._watch: asyncio.Task[None] | None = None
        self._applied: bytes | None = None  # SHA-256 of the rules file in force
        # Told of each edit applied: (path, old SHA-256, new SHA-256); the audit log.
        self.on_reload: Callable[[str, bytes, bytes], None] | None = None
        self.problem = ""  # why the last reload applied nothing ("" when it did): the admin API's

    # --- hosts ----------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or self.settings.runtime is None:
            return
        if deny := self._check_host(flow):
            # go prints a refused CONNECT's status text, not its body: say it all there.
            flow.response = plain(403, deny)
            flow.response.reason = " ".join(deny.split()).encode("ascii", "replace").decode()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Every request that is not for a proxy modgate gates (the Router marked those):
        plain-HTTP proxy requests, absolute-form requests sent over TLS to the proxy port
        itself (`curl --proxy https://…`), requests inside a tunnel (its CONNECT was
        checked too; the answer is the same). However it arrives, the same host rules."""
        if flow.response or flow.error or self.settings.runtime is None:
            return
        if "modgate.proxy" in flow.metadata:
            return
        if deny := self._check_host(flow):
            flow.response = plain(403, deny)
            return
        vcs: VcsRequest | None = flow.metadata.get(VCS)
        if vcs is not None and vcs.module:
            # A direct fetch from a hosts.vcs host, by its repository or module path; in
            # both spellings, since hosts such as GitHub ignore a path's case.
            rules, team = self.settings.runtime.config.rules, _team(flow)
            decision = rules.decide_path(vcs.module, team)
            if isinstance(decision, Allow) and vcs.module.lower() != vcs.module:
                decision = rules.decide_path(vcs.module.lower(), team)
            self._refuse(flow, decision, vcs.module, rules.mode)

    def _check_host(self, flow: http.HTTPFlow) -> str:
        """Decide and record; the refusal to answer with, or "" to let it pass."""
        runtime = self.settings.runtime
        assert runtime is not None
        host, port = normal_host(flow.request.host), flow.request.port
        decision = runtime.config.rules.decide_host(host, port, runtime.gated, _team(flow))
        return self._judge(flow, decision, f"host {host}:{port}", runtime.config.rules.mode)

    # --- modules --------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        req: ModRequest | None = flow.metadata.get("modgate.request")
        chain: Chain | None = flow.metadata.get("modgate.chain")
        runtime = self.settings.runtime
        if req is None or chain is None or runtime is None or flow.response or flow.error:
            return
        rules, team = runtime.config.rules, _team(flow)
        if req.sumdb or not req.module:
            # Checksum-database traffic: see the module docstring.
            if req.module and (owned := rules.owned(req.module, team)):
                self._refuse(flow, owned, req.module, rules.mode)
            return
        if req.kind is not Kind.ZIP:
            # Metadata is refused only with the whole module: go reads the go.mod of many
            # versions it never builds (minimal version selection), and the code is in the zip.
            decision = rules.decide_path(req.module, team)
            if self._refuse(flow, decision, req.module, rules.mode):
                return
            filtered = req.kind in (Kind.LIST, Kind.LATEST) and rules.mode is Mode.ENFORCE
            if filtered and rules.may_deny_versions(req.module, team):
                await self._filter(flow, runtime, chain, req)
            return
        retractions = await self._retractions(runtime, chain, req.module, team=team)
        decision = rules.decide(req.module, req.version, retractions, team)
        self._refuse(flow, decision, f"{req.module}@{req.version}", rules.mode)

    def _refuse(self, flow: http.HTTPFlow, decision: Decision, what: str, mode: Mode) -> bool:
        """Record `decision`; answer the flow when it refuses (and is enforced)."""
        refusal = self._judge(flow, decision, what, mode)
        if not refusal:
            return False
        assert isinstance(decision, Deny)
        if decision.status == 404:  # an owner's "as if absent"
            flow.response = plain(404, f"modgate: {what}: not found")
        else:
            flow.response = plain(403, refusal)
        return True

    def _judge(self, flow: http.HTTPFlow, decision: Decision, what: str, mode: Mode) -> str:
        """Record a decision on the flow; the refusal message when it is enforced, else ""."""
        match decision:
            case Allow(rule):
                flow.metadata[RULE] = {"verdict": "allow", "rule": rule.where, "reason": ""}
                return ""
            case Deny(rule, reason):
                message = refusal_message(what, decision)
                if mode is Mode.AUDIT:
                    flow.metadata[RULE] = {
                        "verdict": "audit-deny",
                        "rule": rule.where,
                        "reason": reason,
                    }
                    log.warning(
                        "modgate: audit: would refuse %s", message.removeprefix("modgate: refused ")
                    )
                    return ""
                flow.metadata[RULE] = {"verdict": "deny", "rule": rule.where, "reason": reason}
                log.info("%s", message)
                return message
            case _:
                assert_never(decision)

    async def _filter(
        self, flow: http.HTTPFlow, runtime: Runtime, chain: Chain, req: ModRequest
    ) -> None:
        """Answer a list or @latest with only what the rules allow."""
        served = await self._serve(flow, runtime, chain, req)
        if served is None:
            return
        answer, data = served
        if answer.entry.status != 200:
            self._answer(flow, answer, data)
        elif req.kind is Kind.LIST:
            await self._filter_list(flow, runtime, chain, req, answer, data)
        else:
            version, team = _info_version(data), _team(flow)
            retractions = await self._retractions(runtime, chain, req.module, team=team)
            decision = runtime.config.rules.decide(req.module, version, retractions, team)
            if isinstance(decision, Deny):
                await self._newest_allowed(flow, runtime, chain, req, decision, version)
            else:
                self._answer(flow, answer, data)

    async def _filter_list(
        self, flow: http.HTTPFlow, runtime: Runtime, chain: Chain, req: ModRequest,
        answer: Served, data: bytes,
    ) -> None:  # fmt: skip
        rules, team = runtime.config.rules, _team(flow)
        lines = data.decode("utf-8", "replace").splitlines()
        versions = [line.split()[0] for line in lines if line.split()]
        retractions = await self._retractions(runtime, chain, req.module, versions, team)
        allowed = set(rules.allowed_versions(req.module, versions, retractions, team))
        kept = [line for line in lines if line.split() and line.split()[0] in allowed]
        hidden = sorted(set(versions) - allowed)
        if hidden:
            flow.metadata[RULE] = {**flow.metadata.get(RULE, {}), "hidden": hidden}
        self._answer(flow, answer, "".join(f"{line}\n" for line in kept).encode())

    async def _newest_allowed(
        self, flow: http.HTTPFlow, runtime: Runtime, chain: Chain, req: ModRequest,
        refused: Deny, latest: str,
    ) -> None:  # fmt: skip
        """@latest names a refused version: answer with the .info of the newest allowed
        version in the list, or refuse when there is none."""
        rules, team = runtime.config.rules, _team(flow)
        listed = await self._fetch(runtime, chain, f"{escape(req.module)}/@v/list")
        versions = [line.split()[0] for line in (listed or "").splitlines() if line.split()]
        retractions = await self._retractions(runtime, chain, req.module, versions, team)
        pick = latest_of(rules.allowed_versions(req.module, versions, retractions, team))
        if pick is None:
            refusal = self._judge(flow, refused, f"{req.module}@{latest}", rules.mode)
            flow.response = plain(403, refusal)
            return
        info = parse_request(f"{escape(req.module)}/@v/{escape(pick)}.info")
        served = await self._serve(flow, runtime, chain, info)
        if served is None:
            return
        flow.metadata[RULE] = {
            "verdict": "allow",
            "rule": refused.rule.where,
            "reason": f"@latest is {latest}, refused ({refused.reason}): answered with {pick}",
        }
        self._answer(flow, *served)

    # --- fetching through the gateway ------------------------------------------------

    async def _serve(
        self, flow: http.HTTPFlow, runtime: Runtime, chain: Chain, req: ModRequest
    ) -> tuple[Served, bytes] | None:
        """Serve `req` through the gateway (so it is cached), or answer the flow with the
        error as CacheGate would and return None."""
        try:
            served = await runtime.gateway.serve(chain, req)
        except ModgateError as e:  # UpstreamError, IntegrityError, CacheError
            flow.metadata["modgate.error"] = str(e)
            flow.response = plain(503 if isinstance(e, CacheError) else 502, f"modgate: {e}")
            return None
        try:
            data = served.body.read()
        finally:
            served.body.close()
        flow.metadata["modgate.cache"] = served.outcome.value
        flow.metadata["modgate.upstream"] = served.entry.upstream
        return served, data

    def _answer(self, flow: http.HTTPFlow, served: Served, data: bytes) -> None:
        headers = {
            "Content-Type": served.entry.content_type,
            "X-Modgate-Cache": served.outcome.value,
        }
        if served.outcome is Outcome.STALE:  # as CacheGate marks it
            headers["Warning"] = '110 modgate "Response is Stale"'
            headers["X-Modgate-Stale-Reason"] = " ".join(served.stale_reason.split())[:300]
        flow.response = http.Response.make(served.entry.status, data, headers)

    async def _fetch(self, runtime: Runtime, chain: Chain, path: str) -> str | None:
        """A small answer's text through the gateway; None on 404/410 or failure."""
        try:
            status, data = await runtime.gateway.fetch_body(chain, parse_request(path))
            return data.decode("utf-8") if status == 200 else None
        except (ModgateError, UnicodeDecodeError) as e:
            log.warning("modgate: cannot read %s: %s", path, e)
            return None

    async def _retractions(
        self,
        runtime: Runtime,
        chain: Chain,
        module: str,
        versions: list[str] | None = None,
        team: str | None = None,
    ) -> tuple[Retraction, ...]:
        """The `retract` directives of the module's latest go.mod ("retract directive": the
        go command reads them from the latest version, releases before pre-releases), when
        a rule that may decide `module` refuses retracted versions; else none. When they
        cannot be read the decision is made without them, with a warning: the cache must
        keep serving modules when the upstream is down."""
        if not runtime.config.rules.needs_retractions(module, team):
            return ()
        base = escape(module)
        if versions is None:
            listed = await self._fetch(runtime, chain, f"{base}/@v/list")
            versions = [line.split()[0] for line in (listed or "").splitlines() if line.split()]
        latest = latest_of(versions)
        if latest is None:
            info = await self._fetch(runtime, chain, f"{base}/@latest")
            latest = _info_version(info.encode()) if info else None
        gomod = (
            await self._fetch(runtime, chain, f"{base}/@v/{escape(latest)}.mod") if latest else None
        )
        if gomod is None:
            log.warning("modgate: retractions of %s unknown: deciding without them", module)
            return ()
        try:
            return parse_gomod(gomod).retractions
        except ValueError as e:
            log.warning(
                "modgate: %s@%s go.mod: %s: deciding without retractions", module, latest, e
            )
            return ()

    # --- the rules file -------------------------------------------------------------

    def running(self) -> None:
        if self._watch is None:
            # What is in force now, before the task first runs: an edit made in between
            # must count as one.
            path = ctx.options.modgate_rules
            self._applied = digest(path)
            self._watch = asyncio.get_running_loop().create_task(self._poll(_signature(path)))

    async def done(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def _poll(self, seen: tuple[int, int, int] | None) -> None:
        """Watch the rules file for as long as modgate runs: no error stops it."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            path = ctx.options.modgate_rules
            try:
                now = _signature(path)
                if now == seen:
                    continue
                seen = now
                data = await read_settled(path)
                if hashlib.sha256(data).digest() != self._applied:  # else touched, not changed
                    self.reload(path, data)
            except ModgateError as e:
                log.error("modgate: %s; the previous rules stay in force", e)
                seen = None  # read it again at the next poll
            except Exception as e:
                log.error(
                    "modgate: %s: watching the rules file failed (%s: %s); the previous rules "
                    "stay in force, still watching", path, type(e).__name__, e,
                )  # fmt: skip
                log.debug("modgate: watching %s", path, exc_info=True)
                seen = None

    def reload(self, path: str, data: bytes | None = None) -> bool:
        """Apply an edited rules file (`data`, its bytes read already), all or nothing, as
        if the option had been set again. Keep the rules in force, and say why, when it is
        broken, when it would drop every rule by accident (`rulesfile.may_replace`), or
        when applying it fails. Never raises: the watcher must go on."""
        runtime = self.settings.runtime
        self.problem = ""
        try:
            edited = config_from_bytes(Path(path).read_bytes() if data is None else data, path)
            verdict = may_replace(runtime.config, edited) if runtime else Replace()
            match verdict:
                case Keep(reason):
                    self.problem = (
                        f"{path}: edit not applied, the previous rules stay in force: {reason}"
                    )
                    log.error("modgate: %s: edit not applied, the previous rules stay in force: %s",
                              path, reason)  # fmt: skip
                    return False
                case Replace():
                    self.settings.apply(edited)
                case _:
                    assert_never(verdict)
        except Exception as e:
            # Settings.reload is all or nothing; only what follows it may fail half way.
            kept = "the previous rules stay in force"
            if self.settings.runtime is not runtime:
                kept = "the new rules are in force, but not all of the edit could be applied"
            self.problem = f"{e}; {kept}"
            if isinstance(e, ModgateError):
                log.error("modgate: %s; %s", e, kept)
            else:
                log.error("modgate: %s: reload failed (%s: %s); %s, still watching",
                          path, type(e).__name__, e, kept)  # fmt: skip
                log.debug("modgate: reload of %s", path, exc_info=True)
            return False
        before = self._applied
        self._applied = hashlib.sha256(data).digest() if data is not None else digest(path)
        if self.on_reload is not None:
            self.on_reload(path, before or b"", self._applied or b"")
        if self.settings.runtime is not None:
            log.info("modgate: reloaded %s: %s", path, summary(self.settings.runtime.config.rules))
        return True


def _team(flow: http.HTTPFlow) -> str | None:
    """The requester's team (AuthGate), None when unauthenticated or without teams."""
    return flow.metadata.get("modgate.team") or None


def summary(rules: Rules) -> str:
    hosts = "any host" if rules.hosts is None else f"{len(rules.hosts.allow)} allowed hosts"
    return (
        f"mode {rules.mode}, {len(rules.modules)} module rules (default {rules.default.action}), "
        f"{len(rules.routes)} routes, {hosts}"
    )


def _signature(path: str) -> tuple[int, int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


async def read_settled(path: str) -> bytes:
    """The rules file's bytes once two reads SETTLE_SECONDS apart agree: an editor saving
    it may leave it empty, half written or briefly missing (a rename) for a moment.
    Raises ConfigError when it never settles within SETTLE_TRIES reads."""
    last: bytes | None = None
    why = ""
    for _ in range(SETTLE_TRIES):
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            last, why = None, f"cannot read rules file: {e.strerror or e}"
        else:
            if data == last:
                return data
            last, why = data, "keeps changing"
        await asyncio.sleep(SETTLE_SECONDS)
    raise ConfigError(
        f"{path}: {why} (read {SETTLE_TRIES} times, {SETTLE_SECONDS}s apart); it is read "
        "again at its next change"
    )


def _info_version(data: bytes) -> str:
    """The Version of an .info or @latest answer (goproxy.check_body made sure it has one)."""
    info: Any = json.loads(data)
    return str(info["Version"])
