"""The dashboard in a real browser (headless Chromium from the distribution, driven by
Playwright): logged in with a one-time signed link, it shows a real `go mod download`
through modgate as it happens, and shows hostile paths, labels and reasons as inert
text. Skips, saying why, where Chromium or Playwright is missing (scripts/setup
installs both where it can)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from world.admin import keygen, login_link
from world.gate import Gate, modgate_command
from world.gocmd import go_env, run_go
from world.modules import World, graph_roots
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

WORLD_MODULES = 10
HOST = "proxy.modgate.test"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
ESCAPE = "\x1b[2J\x1b]0;owned\x07"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (scripts/setup)"
)
if CHROMIUM is None:
    pytest.skip(
        "no chromium on PATH (apt-get install chromium; scripts/setup does as root)",
        allow_module_level=True,
    )


@pytest.fixture
def running(world: World, tmp_path: Path) -> Iterator[tuple[Gate, Upstream, TestSumdb]]:
    from test_e2e_admin import rules_text

    with TestSumdb().add_world(world) as db, Upstream(world) as upstream:
        denied = graph_roots(world)[-1]
        rules = (
            rules_text(upstream, db)
            + f"modules:\n  - deny: {denied}\n    reason: {json.dumps(HOSTILE + ESCAPE)}\n"
        )
        gate = Gate(tmp_path / "gate", rules)
        keygen(gate.confdir, "ops", "read")
        gate.extra_args = ["--admin-listen", "127.0.0.1:0"]
        with gate:
            yield gate, upstream, db


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


HOSTILE_PATH = "/example.com/<script>alert(1)</script><img/src=x/onerror=alert(1)>/@v/list"


def plant_hostile_request(gate: Gate) -> None:
    """A request whose path carries markup, straight to the GOPROXY endpoint (no client
    library would send it), in a session labelled with markup and terminal escapes: the
    trace records both as they came. (A raw escape in a path never gets that far: the
    endpoint's HTTP parser refuses the request line.)"""
    trace = ["--cache-dir", str(gate.cache_dir)]
    label = subprocess.run(modgate_command("trace", "start", HOSTILE + ESCAPE, *trace),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert label.returncode == 0, label.stderr
    host, port = gate.goproxy_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"GET {HOSTILE_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        while sock.recv(65536):
            pass
    gate.traced("path = ?", (HOSTILE_PATH,), lambda rows: bool(rows))
    subprocess.run(modgate_command("trace", "stop", *trace), capture_output=True, timeout=60)


def png_pixels(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def differing(a: Any, b: Any) -> int:
    """How many pixels of two screenshots differ (all of them, if their sizes do)."""
    from PIL import ImageChops

    if a.size != b.size:
        return a.size[0] * a.size[1]
    return sum(1 for v in ImageChops.difference(a, b).convert("L").tobytes() if v)


def test_the_dashboard_shows_a_real_download_live_and_hostile_text_inert(
    running: tuple[Gate, Upstream, TestSumdb], world: World, browser: Any, tmp_path: Path
) -> None:
    gate, upstream, db = running
    link = login_link(gate)
    # Playwright's own checks run as eval, which the page's policy forbids: lift it, so
    # what keeps hostile text inert here is the escaping alone, not the policy.
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    response = page.goto(link)
    assert response is not None and response.ok and page.url.endswith("/dashboard")
    policy = response.headers["content-security-policy"]
    assert (
        "script-src 'nonce-" in policy
        and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert page.evaluate("document.cookie") == ""  # no script can read the session
    page.wait_for_function("document.getElementById('status').textContent === 'live'")
    assert page.locator("#live tbody tr").count() == 0
    empty = png_pixels(page.locator("#live-wrap").screenshot())

    # A real go command through modgate, slowed a little upstream so it is still
    # running while the page watches.
    upstream.fault("*.zip", delay=3.0)
    roots = graph_roots(world)
    home = tmp_path / "client"
    home.mkdir()
    env = gate.client_env(go_env(home, f"https://{HOST}", GOSUMDB=db.verifier_key))
    done: dict[str, Any] = {}
    go = threading.Thread(
        target=lambda: done.update(
            r=run_go(["mod", "download", "-json", f"{roots[0]}@latest"], env, home)
        )
    )
    go.start()
    page.wait_for_function("document.querySelectorAll('#live tbody tr').length > 0", timeout=30_000)
    assert go.is_alive(), "the rows should appear while go still runs"
    go.join(120)
    assert "r" in done
    info = json.loads(done["r"].stdout)
    (go_session,) = {
        r["session"] for r in gate.traced("module = ? AND kind = 'zip'", (info["Path"],), bool)
    }
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#live tbody tr')).some("
        f"tr => tr.cells[3].textContent === {json.dumps(info['Path'] + '@' + info['Version'])} "
        "&& tr.cells[4].textContent === 'zip')",
        timeout=30_000,
    )
    rows = page.locator("#live tbody tr")
    assert rows.count() >= 3
    text = page.locator("#live").inner_text()
    assert "zip" in text and "miss" in text
    filled = png_pixels(page.locator("#live-wrap").screenshot())
    assert differing(filled, empty) > 1000  # the rows region is drawn, not blank

    # Hostile text: a refusal whose reason is markup, a path with markup and escapes.
    denied = run_go(["mod", "download", f"{roots[-1]}@latest"], env, home, check=False)
    assert denied.returncode != 0
    plant_hostile_request(gate)
    page.wait_for_function(
        f"document.getElementById('live').textContent.includes({json.dumps(HOSTILE_PATH)})",
        timeout=30_000,
    )
    live = page.locator("#live").inner_text()
    assert HOSTILE in live and "\\x1b[2J" in live  # the refusal's reason: shown, not obeyed
    assert page.locator("#live img, #live script").count() == 0
    assert page.title() == "modgate dashboard" and dialogs == []

    # Server-rendered: the refusals with their reasons, the sessions, the cache.
    page.reload()
    page.wait_for_function("document.getElementById('status').textContent === 'live'")
    refusals = page.locator("#refusals").inner_text()
    assert HOSTILE in refusals and "\\x1b]0;owned\\x07" in refusals
    assert (
        HOSTILE + "\\x1b[2J\\x1b]0;owned\\x07" in page.locator("#sessions").inner_text()
    )  # the label
    assert page.locator("main img, #refusals script, #sessions script").count() == 0
    assert page.title() == "modgate dashboard" and dialogs == []
    assert "entries" in page.locator("#cache").inner_text()
    assert page.locator("svg[aria-label='hit ratio'], svg[aria-label='bytes stored']").count() >= 1

    # A session's waterfall, the trace's own.
    page.locator("#sessions a", has_text=str(go_session)).click()
    page.wait_for_selector("#chart svg rect")
    assert info["Path"] in page.locator("#chart").inner_text()
    shot = tmp_path / "waterfall.png"
    page.screenshot(path=str(shot))
    assert len(png_pixels(shot.read_bytes()).getcolors(1 << 20) or ()) > 5  # drawn, not blank
    context.close()


def test_the_dashboard_needs_a_fresh_link_or_its_cookie(
    running: tuple[Gate, Upstream, TestSumdb], browser: Any
) -> None:
    gate, _, _ = running
    link = login_link(gate)
    base = link.split("/dashboard/")[0]
    stranger = browser.new_context()
    page = stranger.new_page()
    for path in ("/dashboard", "/dashboard/events", "/dashboard/sessions/1"):
        answer = page.goto(base + path)
        assert answer is not None and answer.status == 401
        assert json.loads(page.locator("body").inner_text())["code"] == 401
    forged = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    answer = page.goto(forged)
    assert answer is not None and answer.status == 401
    owner = browser.new_context()
    assert owner.new_page().goto(link).ok  # used once here ...
    answer = page.goto(link)  # ... and never again
    assert answer is not None and answer.status == 401
    stranger.close()
    owner.close()
    gate.wait_for("replayed request of 'ops'")
    time.sleep(0)
