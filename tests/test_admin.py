"""The admin server (modgate/admin.py) on a real socket, for what an end-to-end run
cannot provoke: a handler that fails (500), a body too large (413), HEAD, the
on_action hook, and routes added at merge (the teams seam)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modgate import adminauth
from modgate.admin import MAX_BODY, Action, AdminServer, Answer, Call, Route, RulesState

OPS = adminauth.AdminKey("ops", "a" * 64, frozenset({"read", "teams"}))


class Backend:
    def __init__(self, root: Path) -> None:
        self.cache_dir = root / "cache"
        self.trace_db = root / "trace.db"

    def rules(self) -> RulesState:
        return RulesState("", None, "no rules")

    def reload_rules(self) -> tuple[bool, str]:
        return False, "modgate runs with no rules file"


Served = tuple[AdminServer, list[Action], str]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    actions: list[Action] = []
    server = AdminServer(Backend(tmp_path), lambda: {"ops": OPS}, actions.append)

    async def boom(call: Call) -> Answer:
        raise RuntimeError("a bug")

    async def create(call: Call) -> Answer:
        return Answer(201, "created", {"team": call.body["name"]})

    server.add_routes([
        Route("GET", "/v1/boom", "boom", "read", boom),
        Route("POST", "/v1/teams", "teams.create", "teams", create, changes=True),
    ])  # fmt: skip
    sock = socket.create_server(("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(sock), loop).result(10)
    yield server, actions, f"http://127.0.0.1:{sock.getsockname()[1]}"
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def call(
    served: Served, method: str, path: str, body: bytes = b"", sign: bool = True
) -> tuple[int, dict[str, Any], Any]:
    headers = adminauth.signed_headers(OPS, method, path, body) if sign else {}
    req = urllib.request.Request(
        served[2] + path, data=body or None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, data, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, data, hdrs = e.code, e.read(), e.headers
    answer = json.loads(data) if data else {}
    if data:
        assert set(answer) == {"code", "message", "data"} and answer["code"] == status
    return status, answer, hdrs


def test_a_failing_handler_answers_500_in_the_envelope_and_leaks_no_trace(served: Served) -> None:
    status, answer, hdrs = call(served, "GET", "/v1/boom")
    assert status == 500 and answer["message"] == "internal error; see modgate's log"
    assert "a bug" not in json.dumps(answer) and hdrs["Cache-Control"] == "no-store"


def test_a_body_too_large_answers_413_in_the_envelope(served: Served) -> None:
    status, answer, _ = call(served, "POST", "/v1/teams", b"x" * (MAX_BODY + 1))
    assert status == 413


def test_head_is_get_without_a_body(served: Served) -> None:
    status, answer, _ = call(served, "HEAD", "/v1/whoami")
    assert status == 200 and answer == {}


def test_on_action_hears_changes_and_refusals_not_reads(served: Served) -> None:
    _, actions, _ = served
    assert call(served, "GET", "/v1/whoami")[0] == 200
    assert actions == []
    status, answer, _ = call(served, "POST", "/v1/teams", b'{"name": "a"}')
    assert status == 201 and answer["data"] == {"team": "a"}
    assert call(served, "POST", "/v1/teams", b'{"name": "b"}', sign=False)[0] == 401
    status, answer, _ = call(served, "POST", "/v1/rules/reload")  # ops lacks "rules"
    assert status == 401
    done, unsigned, lacking = actions
    assert (done.who, done.what, done.arguments, done.result) == (
        "ops",
        "teams.create",
        {"name": "a"},
        "ok",
    )
    assert (
        unsigned.who == ""
        and unsigned.what == "POST /v1/teams"
        and unsigned.result.startswith("refused: X-Modgate-Admin: missing")
    )
    assert lacking.who == "ops" and "lacks the 'rules' scope" in lacking.result
    assert all(a.time > 0 for a in actions)


def test_a_404_and_a_405_need_a_signature_first(served: Served) -> None:
    assert call(served, "GET", "/v1/nothing", sign=False)[0] == 401
    assert call(served, "GET", "/v1/nothing")[0] == 404
    status, answer, hdrs = call(served, "DELETE", "/v1/teams")
    assert status == 405 and hdrs["Allow"] == "POST"
