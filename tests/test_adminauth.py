"""The admin API's signatures (modgate/adminauth.py): every way a request can be wrong
is refused, and only the one right request is accepted, once."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modgate import adminauth
from modgate.adminauth import (
    ADMIN,
    SIGNATURE,
    TIMESTAMP,
    Accepted,
    AdminKey,
    Refused,
    Signed,
    Verifier,
    parse_headers,
    sign,
)
from modgate.errors import ConfigError

NOW = 1_800_000_000
ALICE = AdminKey("alice", "a" * 64, frozenset({"read", "cache"}))
BOB = AdminKey("bob", "b" * 64, frozenset({"read"}))
TARGET = "/v1/cache/evict?module=example.com/m&version=v1.0.0"
BODY = b'{"module": "example.com/m"}'


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(clock: Clock | None = None, **kwargs: int) -> Verifier:
    clock = clock or Clock()
    started = Clock(NOW - 1000)  # started long ago: the start bound is tested apart
    v = Verifier(lambda: {"alice": ALICE, "bob": BOB}, clock=started, **kwargs)  # type: ignore[arg-type]
    v.clock = clock
    return v


def headers(key: AdminKey = ALICE, method: str = "POST", target: str = TARGET,
            body: bytes = BODY, ts: int | str = NOW) -> list[tuple[str, str]]:  # fmt: skip
    return [
        (ADMIN, key.name),
        (TIMESTAMP, str(ts)),
        (SIGNATURE, sign(key.secret, method, target, ts, body)),
    ]


def forged(name: str) -> AdminKey:
    return AdminKey(name, "c" * 64, frozenset())


Case = Callable[[], tuple[str, str, list[tuple[str, str]], bytes, str]]

CASES: dict[str, tuple[str, str, list[tuple[str, str]], bytes, str]] = {
    "expired": ("POST", TARGET, headers(ts=NOW - 301), BODY, "cache"),
    "future": ("POST", TARGET, headers(ts=NOW + 301), BODY, "cache"),
    "wrong key": ("POST", TARGET, headers(key=forged("alice")), BODY, "cache"),
    "another admin's key": (
        "POST",
        TARGET,
        [(ADMIN, "alice"), *headers(key=BOB)[1:]],
        BODY,
        "read",
    ),
    "unknown admin": ("POST", TARGET, headers(key=forged("mallory")), BODY, "read"),
    "wrong scope": ("POST", TARGET, headers(key=BOB), BODY, "cache"),
    "body altered": ("POST", TARGET, headers(), BODY + b" ", "cache"),
    "body dropped": ("POST", TARGET, headers(), b"", "cache"),
    "path altered": ("POST", TARGET.replace("/evict", "/purge"), headers(), BODY, "cache"),
    "query altered": ("POST", TARGET.replace("v1.0.0", "v1.0.1"), headers(), BODY, "cache"),
    "query dropped": ("POST", TARGET.partition("?")[0], headers(), BODY, "cache"),
    "method altered": ("DELETE", TARGET, headers(), BODY, "cache"),
    "timestamp altered": (
        "POST",
        TARGET,
        [*headers()[:1], (TIMESTAMP, str(NOW + 1)), headers()[2]],
        BODY,
        "cache",
    ),
    "no admin header": ("POST", TARGET, headers()[1:], BODY, "cache"),
    "no timestamp": ("POST", TARGET, [headers()[0], headers()[2]], BODY, "cache"),
    "no signature": ("POST", TARGET, headers()[:2], BODY, "cache"),
    "two signatures": ("POST", TARGET, [*headers(), (SIGNATURE, headers()[2][1])], BODY, "cache"),
    "two timestamps": ("POST", TARGET, [*headers(), (TIMESTAMP.lower(), str(NOW))], BODY, "cache"),
    "two admins": ("POST", TARGET, [*headers(), ("x-modgate-admin", "bob")], BODY, "cache"),
    "non-numeric timestamp": (
        "POST",
        TARGET,
        [headers()[0], (TIMESTAMP, "1.8e9"), headers()[2]],
        BODY,
        "cache",
    ),
    "negative timestamp": (
        "POST",
        TARGET,
        [headers()[0], (TIMESTAMP, "-1"), headers()[2]],
        BODY,
        "cache",
    ),
    "signature in upper case": (
        "POST",
        TARGET,
        [*headers()[:2], (SIGNATURE, headers()[2][1].upper())],
        BODY,
        "cache",
    ),
    "signature cut short": (
        "POST",
        TARGET,
        [*headers()[:2], (SIGNATURE, headers()[2][1][:63])],
        BODY,
        "cache",
    ),
}


def test_a_valid_request_is_accepted_with_its_admin_and_scopes() -> None:
    assert verifier().check("POST", TARGET, headers(), BODY, "cache") == Accepted(
        "alice", frozenset({"read", "cache"})
    )


@pytest.mark.parametrize("ts", [NOW - 300, NOW + 300])
def test_the_window_is_300_seconds_either_side(ts: int) -> None:
    assert isinstance(verifier().check("POST", TARGET, headers(ts=ts), BODY, "cache"), Accepted)


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused(case: str) -> None:
    method, target, hdrs, body, scope = CASES[case]
    verdict = verifier().check(method, target, hdrs, body, scope)
    assert isinstance(verdict, Refused), case
    assert verdict.reason


def test_a_replay_is_refused_until_it_leaves_the_window_and_then_as_expired() -> None:
    clock = Clock()
    v = verifier(clock)
    assert isinstance(v.check("POST", TARGET, headers(), BODY, "cache"), Accepted)
    again = v.check("POST", TARGET, headers(), BODY, "cache")
    assert isinstance(again, Refused) and "replayed" in again.reason
    clock.now = NOW + 301
    late = v.check("POST", TARGET, headers(), BODY, "cache")
    assert isinstance(late, Refused) and "expired" in late.reason
    assert v.remembered == 0  # forgotten once it could no longer be used anyway


def test_a_request_with_the_wrong_scope_is_used_up_too() -> None:
    v = verifier()
    assert isinstance(
        v.check("GET", "/v1/x", headers(BOB, "GET", "/v1/x", b""), b"", "cache"), Refused
    )
    assert v.remembered == 1


def test_memory_is_bounded_and_full_refuses_rather_than_forgets() -> None:
    v = verifier(max_remembered=2)
    for i in range(2):
        target = f"/v1/cache/stats?n={i}"
        assert isinstance(
            v.check("GET", target, headers(method="GET", target=target, body=b""), b"", "read"),
            Accepted,
        )
    third = v.check("GET", "/v1/x", headers(method="GET", target="/v1/x", body=b""), b"", "read")
    assert isinstance(third, Refused) and "remember" in third.reason


def test_nothing_signed_before_the_verifier_started_is_accepted() -> None:
    """A restart forgets what it has seen: a request captured before it stays refused."""
    v = Verifier(lambda: {"alice": ALICE}, clock=Clock(NOW))
    old = v.check("POST", TARGET, headers(ts=NOW - 5), BODY, "cache")
    assert isinstance(old, Refused) and "before this modgate started" in old.reason
    assert isinstance(v.check("POST", TARGET, headers(ts=NOW), BODY, "cache"), Accepted)


def test_the_canonical_string_is_the_documented_one() -> None:
    import hashlib
    import hmac

    text = f"POST\n{TARGET}\n{NOW}\n{hashlib.sha256(BODY).hexdigest()}"
    assert adminauth.canonical("POST", TARGET, NOW, BODY) == text.encode()
    expected = hmac.new(ALICE.secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert sign(ALICE.secret, "POST", TARGET, NOW, BODY) == expected


# --- the header parser, over any input --------------------------------------------------

header_names = st.sampled_from([ADMIN, TIMESTAMP, SIGNATURE, ADMIN.upper(), "x-timestamp", "Other"])


@given(st.lists(st.tuples(header_names | st.text(max_size=20), st.text(max_size=80)), max_size=8))
def test_the_header_parser_never_raises_and_accepts_only_one_of_each(
    hdrs: list[tuple[str, str]],
) -> None:
    parsed = parse_headers(hdrs)
    assert isinstance(parsed, Signed | Refused)
    if isinstance(parsed, Signed):
        for name in (ADMIN, TIMESTAMP, SIGNATURE):
            assert sum(n.lower() == name.lower() for n, _ in hdrs) == 1
        assert len(parsed.signature) == 64 and parsed.timestamp >= 0


@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=100))
def test_the_verifier_refuses_any_made_up_headers(admin: str, ts: str, sig: str) -> None:
    verdict = verifier().check(
        "GET", "/v1/cache/stats", [(ADMIN, admin), (TIMESTAMP, ts), (SIGNATURE, sig)], b"", "read"
    )
    assert isinstance(verdict, Refused)


# --- the keys file ----------------------------------------------------------------------


def test_keygen_writes_a_private_file_the_verifier_reads(tmp_path: Path) -> None:
    path = adminauth.keys_path(tmp_path)
    key = adminauth.add_key(path, "ops", ["read", "rules"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert adminauth.load_keys(path) == {"ops": key}
    keys = adminauth.KeysFile(path)
    assert keys()["ops"].scopes == {"read", "rules"}
    with pytest.raises(ConfigError, match="has a key already; --replace"):
        adminauth.add_key(path, "ops", ["read"])
    new = adminauth.add_key(path, "ops", ["read"], replace=True)
    assert new.secret != key.secret and keys()["ops"] == new  # re-read on change
    assert adminauth.remove_key(path, "ops") and "ops" not in keys()


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ('{"admins": {"a": {"secret": "x", "scopes": ["read"]}}}', 0o600, "secret: not 64"),
        ('{"admins": {"a": {"secret": "' + "a" * 64 + '", "scopes": ["root"]}}}', 0o600, "scopes"),
        ('{"admins": {"a b": {"secret": "' + "a" * 64 + '", "scopes": []}}}', 0o600, "name"),
        ("[]", 0o600, "not an admin keys file"),
        ("{", 0o600, "not an admin keys file"),
        (json.dumps({"admins": {}}), 0o644, "chmod 600"),
    ],
)
def test_a_bad_keys_file_is_an_error_naming_it(
    tmp_path: Path, content: str, mode: int, message: str
) -> None:
    path = tmp_path / "admin-keys.json"
    path.write_text(content)
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match=message):
        adminauth.load_keys(path)


@pytest.mark.parametrize(
    "text", ["alice", "alice:" + "A" * 64, ":" + "a" * 64, "alice:" + "a" * 63, "a b:" + "a" * 64]
)
def test_a_client_key_must_be_name_colon_key(text: str) -> None:
    with pytest.raises(ConfigError, match="not an admin key"):
        adminauth.client_key(text, "MODGATE_ADMIN_KEY")


def test_unknown_scopes_are_refused_at_keygen(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown scope admin"):
        adminauth.add_key(tmp_path / "k.json", "x", ["read", "admin"])


def test_the_same_request_twice_in_one_second_is_two_requests_not_a_replay() -> None:
    # `modgate admin rules reload` run twice within a second sent the same method, path,
    # body and whole-second timestamp: the same signature, so the second was taken for a
    # replay (a flaky 401 in the e2e test). The client now signs with milliseconds.
    clock = Clock(NOW + 0.2)
    v = verifier(clock)
    first = adminauth.signed_headers(ALICE, "POST", TARGET, BODY, now=NOW + 0.2)
    second = adminauth.signed_headers(ALICE, "POST", TARGET, BODY, now=NOW + 0.7)
    assert first[TIMESTAMP] != second[TIMESTAMP]
    assert isinstance(v.check("POST", TARGET, first.items(), BODY, "cache"), Accepted)
    assert isinstance(v.check("POST", TARGET, second.items(), BODY, "cache"), Accepted)
    assert isinstance(v.check("POST", TARGET, second.items(), BODY, "cache"), Refused)  # replay


@pytest.mark.parametrize("ts", ["1800000000", "1800000000.5", "1800000000.123456"])
def test_whole_seconds_and_fractions_are_timestamps(ts: str) -> None:
    assert isinstance(verifier().check("POST", TARGET, headers(ts=ts), BODY, "cache"), Accepted)


@pytest.mark.parametrize(
    "ts", ["1800000000.", ".5", "1e9", "1800000000.1234567", "1_800_000_000", "0x1"]
)
def test_other_spellings_of_a_time_are_refused(ts: str) -> None:
    assert isinstance(verifier().check("POST", TARGET, headers(ts=ts), BODY, "cache"), Refused)
