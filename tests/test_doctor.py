"""doctor.py: which way go's requests take, and what each setting disables, decided from
values alone (go's own rules: GOPROXY lists, proxies from the environment, NO_PROXY)."""

from __future__ import annotations

import pytest

from modgate.doctor import (
    Bundle,
    Client,
    Entry,
    Gate,
    client_findings,
    exit_status,
    goproxy_entries,
    no_proxy_excludes,
    paths,
)

PROXY = "http://127.0.0.1:8080"
ENDPOINT = "http://127.0.0.1:8081"
GATED = "https://proxy.modgate.test"
GATE = Gate(PROXY, ENDPOINT, gated=(GATED,))
GOOD_CA = Bundle("/c/ca-bundle.pem", has_modgate_ca=True, others=140)
THROUGH = Client(goproxy=GATED, https_proxy=PROXY, ssl_cert_file="/c/ca-bundle.pem")


@pytest.mark.parametrize(
    ("goproxy", "expected"),
    [
        ("https://a.example,direct", (Entry("https://a.example"), Entry("direct"))),
        ("a.example|b.example/go,off", (Entry("https://a.example", any_error=True),
                                        Entry("https://b.example/go"), Entry("off"))),
        (" http://127.0.0.1:8081 ", (Entry("http://127.0.0.1:8081"),)),
        ("", ()),
        (",,direct", (Entry("direct"),)),
    ],
)  # fmt: skip
def test_goproxy_entries_as_go_reads_them(goproxy: str, expected: tuple[Entry, ...]) -> None:
    assert goproxy_entries(goproxy) == expected


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "excluded"),
    [
        ("*", "proxy.modgate.test", 443, True),
        ("modgate.test", "proxy.modgate.test", 443, True),  # the name and its subdomains
        ("modgate.test", "modgate.test", 443, True),
        (".modgate.test", "modgate.test", 443, False),  # subdomains only
        (".modgate.test", "proxy.modgate.test", 443, True),
        ("*.modgate.test", "proxy.modgate.test", 443, True),
        ("*.modgate.test", "modgate.test", 443, False),
        ("PROXY.modgate.test", "proxy.modgate.test.", 443, True),  # any spelling of the name
        ("proxy.modgate.test:8443", "proxy.modgate.test", 443, False),
        ("proxy.modgate.test:443", "proxy.modgate.test", 443, True),
        ("xmodgate.test", "proxy.modgate.test", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "proxy.modgate.test", 443, False),
        ("10.1.2.3", "10.1.2.3", 443, True),
        ("other.example, modgate.test", "proxy.modgate.test", 443, True),
        ("", "proxy.modgate.test", 443, False),
    ],
)  # fmt: skip
def test_no_proxy_matches_as_go_matches(
    no_proxy: str, host: str, port: int, excluded: bool
) -> None:
    assert no_proxy_excludes(no_proxy, host, port) is excluded


@pytest.mark.parametrize(
    ("client", "way"),
    [
        (THROUGH, "proxy"),
        (Client(goproxy=ENDPOINT), "endpoint"),
        (Client(goproxy="http://localhost:8081/"), "endpoint"),
        (Client(goproxy=GATED), "around"),  # no HTTPS_PROXY
        (Client(goproxy=GATED, https_proxy="http://127.0.0.1:9999"), "around"),
        (Client(goproxy=GATED, https_proxy="127.0.0.1:8080"), "proxy"),  # no scheme: http
        (Client(goproxy=GATED, https_proxy=PROXY, no_proxy="modgate.test"), "around"),
        (Client(goproxy="https://other.example", https_proxy=PROXY), "tunnel"),
        (Client(goproxy="https://127.0.0.1:9443", https_proxy=PROXY), "around"),  # loopback
        (Client(goproxy="direct"), "direct"),
        (Client(goproxy="off"), "off"),
    ],
)  # fmt: skip
def test_the_way_the_first_entry_takes(client: Client, way: str) -> None:
    assert paths(client, GATE)[0].way == way


def _checks(client: Client, bundle: Bundle = GOOD_CA) -> dict[str, str]:
    found = client_findings(client, GATE, bundle, "modgate env", f"export GOPROXY={ENDPOINT}")
    return {f.check: f.status for f in found.items}


def test_a_client_set_up_by_modgate_env_has_nothing_wrong() -> None:
    found = client_findings(THROUGH, GATE, GOOD_CA, "modgate env", "")
    assert found.route == "proxy"
    assert exit_status(found.items) == 0, found.items


@pytest.mark.parametrize(
    ("client", "check", "status"),
    [
        (Client(goproxy=GATED), "route", "fail"),
        (Client(goproxy="direct,https://proxy.modgate.test"), "route", "fail"),
        (Client(goproxy="off"), "route", "fail"),
        (Client(goproxy=""), "route", "fail"),
        (Client(goproxy="https://other.example", https_proxy=PROXY), "route", "fail"),
        (Client(goproxy=GATED, https_proxy=PROXY, no_proxy="*"), "no-proxy", "fail"),
        (Client(goproxy=f"{ENDPOINT},direct"), "goproxy-fallback", "warn"),
        (Client(goproxy=f"{ENDPOINT},https://other.example"), "goproxy-fallback", "warn"),
        (Client(goproxy=f"{ENDPOINT},off"), "goproxy-fallback", "note"),
        (Client(goproxy=ENDPOINT, gosumdb="off"), "gosumdb", "warn"),
        (Client(goproxy=ENDPOINT, goinsecure="*.corp.example"), "goinsecure", "warn"),
        (Client(goproxy=ENDPOINT, goflags="-mod=mod -insecure"), "goflags", "warn"),
        (Client(goproxy=ENDPOINT, gonoproxy="corp.example"), "gonoproxy", "note"),
        (Client(goproxy=ENDPOINT, gonosumdb="corp.example"), "gonosumdb", "note"),
        (Client(goproxy=ENDPOINT, gotoolchain="auto"), "gotoolchain", "note"),
        (Client(goproxy=ENDPOINT, https_proxy="http://corp-proxy:3128"), "https-proxy", "note"),
    ],
)  # fmt: skip
def test_each_setting_that_bypasses_or_weakens_a_check(
    client: Client, check: str, status: str
) -> None:
    assert _checks(client).get(check) == status


def test_settings_that_change_nothing_say_nothing() -> None:
    checks = _checks(Client(goproxy=ENDPOINT, gotoolchain="local", goflags="-mod=mod"))
    assert set(checks) == {"route"}


@pytest.mark.parametrize(
    ("bundle", "status"),
    [
        (GOOD_CA, "ok"),
        (Bundle("", has_modgate_ca=True, others=140), "ok"),  # installed in the system store
        (Bundle("", has_modgate_ca=False, others=140), "fail"),
        (Bundle("/c/x.pem", has_modgate_ca=False, others=3), "fail"),
        (Bundle("/c/ca.pem", has_modgate_ca=True, others=0), "warn"),  # go trusts it alone
        (Bundle("/c/gone.pem", error="No such file or directory"), "fail"),
    ],
)  # fmt: skip
def test_the_ca_go_trusts_through_the_proxy(bundle: Bundle, status: str) -> None:
    assert _checks(THROUGH, bundle)["ca-bundle"] == status


def test_the_endpoint_needs_no_ca() -> None:
    assert "ca-bundle" not in _checks(Client(goproxy=ENDPOINT), Bundle("", has_modgate_ca=False))


def test_every_problem_says_the_fix() -> None:
    clients = [Client(goproxy=GATED, https_proxy=PROXY, no_proxy="*"), Client(goproxy="direct"),
               Client(goproxy=f"{ENDPOINT},direct", gosumdb="off", goinsecure="x", goflags="-insecure")]  # fmt: skip
    for client in clients:
        found = client_findings(client, GATE, Bundle("", error="unreadable"), "modgate env", "")
        problems = [f for f in found.items if f.status in ("warn", "fail")]
        assert problems
        assert all(f.fix for f in problems), problems
