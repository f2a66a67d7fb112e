"""The admin API's team and token routes (scope `teams`), over the teams file that
modgate/teams.py reads and rewrites. No mitmproxy here: `teams` is a callable that
returns the teams in force (or None when rules.yaml names none), lent by the running
modgate (modgate/addons/admin.py).

    GET  /v1/teams                                   teams, their members, token ids
    GET  /v1/teams/tokens                            every token: id, team, member, label
    POST /v1/teams/tokens  {"team", "member", "label"}   a new token (its secret, once)
    POST /v1/teams/tokens/ID/revoke                  the token stops working
    POST /v1/teams/tokens/ID/rotate                  a new secret; the old one stops

A token's secret is in the answer that creates or rotates it and nowhere else: the file
keeps its SHA-256. The change reaches every worker when they read the teams file again
(within a second, as `modgate teams token …` does). Teams written inline in rules.yaml
cannot be changed here: modgate rewrites only a teams file of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modgate import teams as teamsmod
from modgate.admin import Answer, Call, Route
from modgate.errors import ModgateError
from modgate.teams import Teams, Token


def routes(current: Callable[[], Teams | None]) -> list[Route]:
    def file() -> Path:
        teams = current()
        if teams is None:
            raise ModgateError("modgate runs with no teams (rules.yaml has no `teams:`)")
        if teams.file is None:
            raise ModgateError(
                f"the teams are written inline in {teams.source}: move them to a file "
                "(`teams: teams.yaml`) for modgate to manage their tokens"
            )
        return teams.file

    async def show(call: Call) -> Answer:
        teams = current()
        if teams is None:
            return Answer(200, "no teams", [])
        data = [
            {
                "team": team.name,
                "members": [
                    {
                        "name": name,
                        "password": bool(teams.members[name].password),
                        "tokens": [t.id for t in teams.members[name].tokens],
                    }
                    for name in team.members
                    if name in teams.members
                ],
            }
            for team in sorted(teams.teams.values(), key=lambda t: t.name)
        ]
        return Answer(200, f"{len(data)} teams", data)

    async def tokens(call: Call) -> Answer:
        found = await asyncio.to_thread(teamsmod.list_tokens, file())
        data = [_token(team, member, token) for team, member, token in found]
        return Answer(200, f"{len(data)} tokens", data)

    async def create(call: Call) -> Answer:
        body = call.body if isinstance(call.body, dict) else {}
        team, member = _text(body, "team"), _text(body, "member")
        label = body.get("label", "")
        if not isinstance(label, str):
            raise ModgateError('"label" is a string')
        secret, token = await asyncio.to_thread(teamsmod.create_token, file(), team, member, label)
        return Answer(
            200,
            f"token {token.id} for {member} of {team}: the secret is shown once",
            {**_token(team, member, token), "secret": secret},
        )

    async def revoke(call: Call) -> Answer:
        member = await asyncio.to_thread(teamsmod.revoke_token, file(), call.params["id"])
        return Answer(200, f"token {call.params['id']} of {member.name} revoked", None)

    async def rotate(call: Call) -> Answer:
        secret, token = await asyncio.to_thread(teamsmod.rotate_token, file(), call.params["id"])
        return Answer(
            200,
            f"token {call.params['id']} replaced by {token.id}: the secret is shown once",
            {"id": token.id, "replaces": call.params["id"], "secret": secret},
        )

    return [
        Route("GET", "/v1/teams", "teams.show", "teams", show),
        Route("GET", "/v1/teams/tokens", "teams.tokens", "teams", tokens),
        Route("POST", "/v1/teams/tokens", "teams.token.create", "teams", create, changes=True),
        Route(
            "POST",
            "/v1/teams/tokens/{id}/revoke",
            "teams.token.revoke",
            "teams",
            revoke,
            changes=True,
        ),  # fmt: skip
        Route(
            "POST",
            "/v1/teams/tokens/{id}/rotate",
            "teams.token.rotate",
            "teams",
            rotate,
            changes=True,
        ),  # fmt: skip
    ]


def _token(team: str, member: str, token: Token) -> dict[str, Any]:
    return {"id": token.id, "team": team, "member": member, "label": token.label,
            "created": token.created}  # fmt: skip


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ModgateError(f'give {{"{name}": "..."}} in the JSON body')
    return value


def panel(current: Callable[[], Teams | None]) -> Callable[[], list[tuple[str, str]] | None]:
    """The dashboard's teams panel: each team with its members and token count."""

    def rows() -> list[tuple[str, str]] | None:
        teams = current()
        if teams is None:
            return None
        out = []
        for team in sorted(teams.teams.values(), key=lambda t: t.name):
            members = [teams.members[m] for m in team.members if m in teams.members]
            tokens = sum(len(m.tokens) for m in members)
            out.append((team.name, f"{len(members)} members, {tokens} tokens"))
        return out

    return rows
