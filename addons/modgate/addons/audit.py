"""Append the decisions that matter to the audit log (modgate/audit/): artifacts served,
refusals, rules reloads, admin actions, start and stop; part of modgate's addons
(`all_addons()`). Read and check it with `modgate audit`.

It decides nothing about a request. The Tracer tells it of every finished request
(`observe`, the one place both front ends' answers are known); RulesGate of every
reload (`rules_reloaded`); the admin API of every action (`admin_action`). Each entry is
journalled and queued (AuditWriter), never written on the event loop.

With `modgate_audit_required`, module requests are refused with 503 while the log
cannot be written: the gate serves nothing it cannot record.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http

from modgate import __version__, dirhash
from modgate.addons import plain
from modgate.audit import AuditError, keys
from modgate.audit.writer import AuditWriter, Stats
from modgate.rulesfile import digest
from modgate.trace.record import TUNNEL, Record

log = logging.getLogger("modgate")

OPTIONS = {"modgate_audit", "modgate_audit_log", "confdir"}
ARTIFACTS = frozenset({"mod", "zip"})
SERVED, REFUSED = "served", "refused"
IDENTITY, TEAM = "modgate.identity", "modgate.team"  # set by the teams stage, if any
MAX_FIELD = 1024  # characters kept of any one string a client or upstream chose


def default_log(confdir: str) -> Path:
    return Path(confdir).expanduser() / "audit.log"


class Auditor:
    def __init__(self) -> None:
        self.writer: AuditWriter | None = None
        self._path: Path | None = None
        self._required = False
        self._started = False
        self.on_written: Callable[[Stats], None] | None = None  # metrics' write lag

    def load(self, loader: Any) -> None:
        loader.add_option(
            "modgate_audit", bool, True,
            "Append what modgate serves and refuses to the hash-chained audit log.",
        )  # fmt: skip
        loader.add_option(
            "modgate_audit_log", str, "",
            "The audit log file; default: audit.log in the confdir (beside its signing key).",
        )  # fmt: skip
        loader.add_option(
            "modgate_audit_required", bool, False,
            "Refuse module requests with 503 while the audit log cannot be written.",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if "modgate_audit_required" in updated:
            self._required = bool(ctx.options.modgate_audit_required)
        if updated & OPTIONS:
            self._reopen()

    def _reopen(self) -> None:
        if not ctx.options.modgate_audit:
            self._close("audit off")
            return
        confdir = Path(ctx.options.confdir).expanduser()
        path = Path(ctx.options.modgate_audit_log or default_log(ctx.options.confdir))
        path = path.expanduser()
        if path == self._path and self.writer is not None:
            return
        try:
            writer = AuditWriter(path, keys.signing_key(confdir), on_written=self._written)
            writer.start()
        except AuditError as e:
            raise exceptions.OptionsError(f"modgate_audit: {e}") from e
        self._close("audit log changed")
        self.writer, self._path = writer, path
        if self._started:
            self._start_entry()

    def running(self) -> None:
        self._started = True
        if self.writer is None and self._path is None and ctx.options.modgate_audit:
            self._reopen()  # loaded with add(), and no option was ever set
        elif self.writer is not None:
            self._start_entry()

    def done(self) -> None:
        self._close("stopped")

    def _start_entry(self) -> None:
        assert self.writer is not None
        rules = str(getattr(ctx.options, "modgate_rules", "") or "")
        self.submit("start", {
            "version": __version__, "pid": os.getpid(),
            "worker": os.environ.get("MODGATE_WORKER", "").partition(":")[0],
            "rules": rules, "rules_sha256": (digest(rules) or b"").hex(),
        })  # fmt: skip

    def _close(self, why: str) -> None:
        if self.writer is not None:
            self.submit("stop", {"pid": os.getpid(), "why": why})
            self.writer.stop()
        self.writer, self._path = None, None

    def panel(self) -> list[tuple[str, str]] | None:
        """The dashboard's audit panel: where the log is, its signed head (the newest
        entry and checkpoint), and this process's writer. None while the log is off."""
        import time

        from modgate.audit.log import read_head

        if self.writer is None or self._path is None:
            return None
        stats = self.writer.stats
        rows = [("log", str(self._path))]
        try:
            head = read_head(self._path)
        except AuditError as e:
            rows.append(("head", f"unreadable: {e}; run modgate audit verify"))
            head = None
        if head is not None:
            rows.append(("newest entry", f"#{head.seq} {head.hash[:16]}…"))
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(head.checkpoint_time))
            rows.append(("last checkpoint", f"#{head.checkpoint} at {when}" if head.checkpoint
                         else "none yet"))  # fmt: skip
        problems = f"{stats.failures} failed batches, {stats.dropped} entries lost"
        rows.append(("this worker", f"{stats.written} written, {problems}, lag {stats.lag:.3f}s"))
        if stats.last_error:
            rows.append(("last error", stats.last_error))
        return rows

    def _written(self, stats: Stats) -> None:
        if self.on_written is not None:
            self.on_written(stats)

    # --- entries ---------------------------------------------------------------------------

    def submit(self, kind: str, fields: dict[str, Any], when: float | None = None) -> None:
        if self.writer is not None:
            self.writer.submit(kind, fields, when)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or "modgate.request" not in flow.metadata:
            return
        if self.refusing():
            assert self.writer is not None
            why = self.writer.stats.last_error or "writer stopped"
            reason = f"cannot record the audit log: {why}"
            flow.metadata["modgate.error"] = reason
            flow.response = plain(503, f"modgate: {reason}")

    def refusing(self) -> bool:
        """Whether module requests are refused for now (`modgate_audit_required` and the
        log cannot be written): see `requestheaders`."""
        return self._required and self.writer is not None and not self.writer.healthy

    def observe(self, record: Record, meta: Mapping[str, Any], body: bytes | None) -> None:
        """A finished request (Tracer): an artifact served, or anything refused."""
        if self.writer is None:
            return
        entry = entry_of(record, meta, body)
        if entry is None:
            return
        kind, fields = entry
        later = None
        if kind == SERVED and not fields["h1"] and body is not None and record.kind == "zip":
            later = functools.partial(_zip_h1, record, body)  # on the writer's thread
        self.writer.submit(kind, fields, when=record.end, later=later)

    def rules_reloaded(self, path: str, old: bytes, new: bytes) -> None:
        """RulesGate applied an edited rules file: `old` and `new` are SHA-256 digests."""
        self.submit("rules-reload", {"rules": path, "old_sha256": old.hex(),
                                     "new_sha256": new.hex()})  # fmt: skip

    def admin_action(self, action: object) -> None:
        """The admin API's hook (`on_action`): who did what, and the result. `action` is
        a mapping or a dataclass; its fields are recorded as they are."""
        if dataclasses.is_dataclass(action) and not isinstance(action, type):
            fields = dataclasses.asdict(action)
        elif isinstance(action, Mapping):
            fields = dict(action)
        else:
            fields = {"action": str(action)}
        self.submit("admin", {str(k): _plain(v) for k, v in fields.items()})


def entry_of(
    record: Record, meta: Mapping[str, Any], body: bytes | None
) -> tuple[str, dict[str, Any]] | None:
    """The audit entry of a finished request (kind, fields), None when it is neither an
    artifact served nor a refusal. Served: a .mod or .zip that went out with 200, with its
    h1 (computed here from the body when no verifier gave one) and what verified it."""
    if record.refused:
        kind = REFUSED
    elif record.kind in ARTIFACTS and record.status == 200:
        kind = SERVED
    else:
        return None
    fields: dict[str, Any] = {
        "kind": record.kind,
        "module": _clip(record.module),
        "version": _clip(record.version),
        "identity": _clip(str(meta.get(IDENTITY, "") or "")),
        "team": _clip(str(meta.get(TEAM, "") or "")),
        "client": record.client,
        "port": record.client_port,
        "start": record.start,  # with `port`: the trace record's key (`trace show`)
        "status": record.status,
    }
    if record.kind == TUNNEL or not record.module:
        fields["target"] = _clip(record.url)
    if kind == SERVED:
        fields |= {
            "h1": record.h1 or _h1(record, body),
            "verified": record.hash_verdict or "unverified",
            "by": record.hash_source,
            "cache": record.cache,
            "upstream": _clip(record.upstream),
        }
    else:
        fields |= {
            "rule": record.rule if record.rule_verdict == "deny" else "",
            "hash": record.hash_verdict if record.rule_verdict != "deny" else "",
            "reason": _clip(record.refusal),
        }
    return kind, fields


def _h1(record: Record, body: bytes | None) -> str:
    """The h1 of a .mod no verifier hashed (small: hashed here); a zip's is `_zip_h1`."""
    if body is None or record.kind != "mod":
        return ""
    try:
        return dirhash.hash_gomod(body)
    except ValueError:
        return ""


def _zip_h1(record: Record, body: bytes) -> dict[str, Any]:
    try:
        return {"h1": dirhash.hash_zip(io.BytesIO(body), f"{record.module}@{record.version}/")}
    except (ValueError, dirhash.ZipError):
        return {}  # not a valid module zip: no hash to give


def _clip(text: str) -> str:
    """As sent (JSON escapes it in the log; `modgate audit` escapes it for a terminal),
    but bounded."""
    return text[:MAX_FIELD]


def _plain(value: object) -> object:
    if isinstance(value, str | int | float | bool) or value is None:
        return _clip(value) if isinstance(value, str) else value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return _clip(str(value))
