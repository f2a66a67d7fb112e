"""The dashboard's pure parts (modgate/dashboard.py): the login link is a signed
request the verifier accepts once; panels, charts and live rows escape what they show.
The pages themselves are tested in a browser: tests/test_e2e_dashboard.py."""

from __future__ import annotations

import re
import time

from modgate import adminauth, dashboard
from modgate.adminauth import Accepted, AdminKey, Refused, Signed, Verifier
from traceworld import T0, rec

OPS = AdminKey("ops", "a" * 64, frozenset({"read"}))


def test_the_login_link_is_a_signed_get_accepted_once() -> None:
    now = int(time.time())
    link = dashboard.login_link("http://127.0.0.1:8082/", OPS, now)
    m = re.fullmatch(
        r"http://127\.0\.0\.1:8082(/dashboard/login\?admin=ops&ts=(\d+))&sig=([0-9a-f]{64})", link
    )
    assert m, link
    target, ts, sig = m.group(1), int(m.group(2)), m.group(3)
    verifier = Verifier(lambda: {"ops": OPS}, clock=lambda: now)
    signed = Signed("ops", ts, sig)
    assert verifier.check_signed(signed, "GET", target, b"", "read") == Accepted("ops", OPS.scopes)
    again = verifier.check_signed(signed, "GET", target, b"", "read")
    assert isinstance(again, Refused) and "replayed" in again.reason
    other = dashboard.login_link("http://x", AdminKey("ops", "b" * 64, frozenset()), now)
    forged = Signed("ops", now, other.rpartition("sig=")[2])
    assert isinstance(verifier.check_signed(forged, "GET", target, b"", "read"), Refused)
    assert adminauth.sign(OPS.secret, "GET", target, ts) == sig


def test_panels_escape_markup_and_terminal_escapes() -> None:
    html = dashboard._panel(lambda: [("<script>x</script>", "\x1b[2Jteam\u202e")], "absent")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\\x1b[2J" in html and "\\u202e" in html and "\x1b" not in html
    assert "not configured" in dashboard._panel(None, "teams are not configured")


def test_a_live_row_is_text_with_escapes_written_out() -> None:
    row = dashboard.live_row(
        rec(0, path="/x/\x1b]0;owned\x07/@v/list", kind="other", module="", version="")
    )
    assert row["target"] == "/x/\\x1b]0;owned\\x07/@v/list"


def test_charts_need_two_points_and_draw_no_outside_text() -> None:
    assert "Not enough data" in dashboard._chart([(T0, 0.5)], "hit ratio", percent=True)
    svg = dashboard._chart([(T0, 0.2), (T0 + 60, 0.9)], "hit ratio", percent=True)
    assert svg.startswith("<svg") and "polyline" in svg and "100%" in svg
