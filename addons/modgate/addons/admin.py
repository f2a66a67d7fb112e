"""Serve the admin API (modgate/admin.py) and the dashboard (modgate/dashboard.py) on
their own address; `modgate run` adds it, its socket bound already, to one process
only: the single one, or worker 0 of several (workers.py): one admin API per modgate.

It lends the API what only the running modgate has: the rules in force and their
reload (RulesGate.reload, what the file watcher calls), the cache directory and the
trace database. Everything else the API does as `modgate cache` and `modgate trace` do.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitmproxy import ctx

from modgate import adminauth
from modgate.admin import Action, AdminServer, Route, RulesState
from modgate.dashboard import Panel


class _Backend:
    @property
    def cache_dir(self) -> Path:
        return Path(ctx.options.modgate_cache_dir).expanduser()

    @property
    def trace_db(self) -> Path:
        from modgate.trace.store import default_db

        return Path(ctx.options.modgate_trace_db or default_db(self.cache_dir))

    def rules(self) -> RulesState:
        from modgate.addons.rules import summary
        from modgate.addons.settings import Settings

        path = ctx.options.modgate_rules
        runtime = ctx.master.addons.get("modgate").stage(Settings).runtime
        text = None
        if path:
            try:
                text = Path(path).read_text(errors="replace")
            except OSError:
                text = None
        return RulesState(path, text, summary(runtime.config.rules) if runtime else "no rules")

    def reload_rules(self) -> tuple[bool, str]:
        from modgate.addons.rules import RulesGate, summary
        from modgate.addons.settings import Settings

        path = ctx.options.modgate_rules
        if not path:
            return False, "modgate runs with no rules file (--rules): nothing to reload"
        pipeline = ctx.master.addons.get("modgate")
        gate = pipeline.stage(RulesGate)
        if not gate.reload(path):
            return False, gate.problem
        runtime = pipeline.stage(Settings).runtime
        workers = ""
        if ctx.master.addons.get("modgate_admin").workers:
            workers = "; the other workers apply the file within a second (their own watch)"
        return True, f"reloaded {path}: {summary(runtime.config.rules)}{workers}"


class Admin:
    """The seams, for the parts of issue 15 built beside it: `routes` (the teams
    module's /v1/teams/... endpoints: admin.Route, scope "teams"), `subscribers` (the
    audit log: called with every admin.Action), and the dashboard's `teams` and `audit`
    panels (dashboard.Panel: rows of name and detail, or None while not configured)."""

    name = "modgate_admin"  # what ctx.master.addons.get() finds it by

    def __init__(self, sock: socket.socket, confdir: Path, workers: bool = False) -> None:
        self.sock = sock
        self.confdir = confdir
        self.workers = workers
        self.server: AdminServer | None = None
        self.routes: list[Route] = []
        self.subscribers: list[Callable[[Action], None]] = []
        self.teams: Panel | None = None
        self.audit: Panel | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _on_action(self, action: Action) -> None:
        for subscriber in self.subscribers:
            subscriber(action)

    def _wire(self) -> None:
        """Join the parts of the running pipeline the API serves: the teams in force
        (their /v1/teams routes and panel) and the audit log (every Action, its panel)."""
        from modgate import teams_api
        from modgate.addons.audit import Auditor
        from modgate.addons.settings import Settings

        pipeline = ctx.master.addons.get("modgate")
        if pipeline is None:  # loaded without modgate's pipeline (a test's own master)
            return
        settings = pipeline.stage(Settings)

        def teams() -> Any:
            return settings.runtime.config.teams if settings.runtime else None

        self.routes.extend(teams_api.routes(teams))
        self.teams = self.teams or teams_api.panel(teams)
        auditor = pipeline.stage(Auditor)
        self.subscribers.append(auditor.admin_action)
        self.audit = self.audit or auditor.panel

    async def running(self) -> None:
        from modgate.dashboard import Dashboard

        self._wire()
        keys = adminauth.KeysFile(adminauth.keys_path(self.confdir))
        self.server = AdminServer(_Backend(), keys, self._on_action)
        self.server.add_routes(self.routes)
        Dashboard(self.server, teams=self.teams, audit=self.audit).install()
        await self.server.start(self.sock)

    async def done(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        self.sock.close()
