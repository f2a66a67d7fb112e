"""modgate.teams: the teams file, credentials as an attacker would send them, and token
management."""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path

import bcrypt
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from modgate.config import parse_config
from modgate.errors import ConfigError
from modgate.teams import (
    BAD_TOKEN,
    MALFORMED,
    MISSING,
    WRONG,
    Authenticator,
    Identity,
    Teams,
    Unauthenticated,
    create_token,
    hash_password,
    list_tokens,
    load_teams_file,
    revoke_token,
    rotate_token,
)

ALICE_PW = "correct horse"
# Made once: argon2id takes ~0.3 s a hash.
ALICE_HASH = hash_password(ALICE_PW)
BOB_BCRYPT = bcrypt.hashpw(b"bob's pw", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def teams_file(tmp_path: Path, htpasswd: str = "") -> Path:
    (tmp_path / "b.htpasswd").write_text(htpasswd or f"# team b\nbob:{BOB_BCRYPT}\n")
    path = tmp_path / "teams.yaml"
    path.write_text(
        "teams:\n"
        "  team-a:\n"
        "    members:\n"
        f"      alice: {{password: '{ALICE_HASH}'}}\n"
        "      ci: {}\n"
        "  team-b:\n"
        "    htpasswd: b.htpasswd\n"
    )
    return path


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return teams_file(tmp_path)


def test_passwords_argon2_and_htpasswd_bcrypt_identify_their_team(path: Path) -> None:
    auth = Authenticator(load_teams_file(path))
    assert auth.authenticate([basic("alice", ALICE_PW)]) == Identity("alice", "team-a")
    assert auth.authenticate([basic("bob", "bob's pw")]) == Identity("bob", "team-b")


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], MISSING),
        ([basic("alice", "wrong")], WRONG),
        ([basic("mallory", ALICE_PW)], WRONG),  # unknown user: the same answer
        ([basic("ci", "")], WRONG),  # a member with tokens only has no password
        ([basic("alice", ALICE_PW), basic("alice", ALICE_PW)], "more than one credentials header"),
        (["Basic !!!notbase64"], MALFORMED),
        (["Basic " + base64.b64encode(b"no-colon").decode()], MALFORMED),
        (["Basic " + base64.b64encode(b":pw").decode()], MALFORMED),
        (["Basic " + base64.b64encode(b"\xff\xfe:x").decode()], MALFORMED),
        (["Digest username=alice"], MALFORMED),
        (["Bearer"], MALFORMED),
        (["Bearer mgt_000000000000_" + "A" * 43], BAD_TOKEN),
        (["Bearer not-a-token"], BAD_TOKEN),
        ([basic("alice", "mgt_000000000000_" + "A" * 43)], BAD_TOKEN),
    ],
)
def test_every_bad_credential_is_refused_with_a_reason_that_names_nobody(
    path: Path, values: list[str], reason: str
) -> None:
    got = Authenticator(load_teams_file(path)).authenticate(values)
    assert got == Unauthenticated(reason)
    assert "alice" not in got.reason and "team" not in got.reason


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_the_scheme_is_case_insensitive_as_rfc_7617_says(path: Path, scheme: str) -> None:
    value = basic("alice", ALICE_PW).replace("Basic", scheme)
    assert Authenticator(load_teams_file(path)).authenticate([value]) == Identity("alice", "team-a")


def test_a_successful_password_check_is_remembered_a_failed_one_is_not(path: Path) -> None:
    now = [0.0]
    auth = Authenticator(load_teams_file(path), clock=lambda: now[0])
    good = [basic("alice", ALICE_PW)]
    assert auth.authenticate_fast(good) is None  # needs the slow hash
    assert auth.authenticate(good) == Identity("alice", "team-a")
    assert auth.authenticate_fast(good) == Identity("alice", "team-a")
    assert auth.authenticate_fast([basic("alice", "wrong")]) is None
    auth.authenticate([basic("alice", "wrong")])
    assert auth.authenticate_fast([basic("alice", "wrong")]) is None
    now[0] += 61
    assert auth.authenticate_fast(good) is None  # expired: checked again
    # The cache keeps no credential: only salted digests.
    assert all(ALICE_PW.encode() not in k for k in auth._cache)


def test_tokens_create_authenticate_rotate_revoke(path: Path) -> None:
    secret, token = create_token(path, "team-a", "ci", "nightly")
    assert secret.startswith("mgt_") and token.id in secret
    assert secret not in path.read_text()  # only its hash is written
    auth = Authenticator(load_teams_file(path))
    assert auth.authenticate_fast([f"Bearer {secret}"]) == Identity("ci", "team-a")
    # Basic with the token as password (.netrc): the user must be the token's member.
    assert auth.authenticate([basic("ci", secret)]) == Identity("ci", "team-a")
    assert auth.authenticate([basic("alice", secret)]) == Unauthenticated(BAD_TOKEN)
    # A token one character off.
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert auth.authenticate([f"Bearer {tampered}"]) == Unauthenticated(BAD_TOKEN)

    new_secret, new = rotate_token(path, token.id)
    rotated = Authenticator(load_teams_file(path))
    assert rotated.authenticate([f"Bearer {secret}"]) == Unauthenticated(BAD_TOKEN)
    assert rotated.authenticate([f"Bearer {new_secret}"]) == Identity("ci", "team-a")
    assert [(t, m, tok.id, tok.label) for t, m, tok in list_tokens(path)] == [
        ("team-a", "ci", new.id, "nightly")
    ]
    revoke_token(path, new.id)
    assert list_tokens(path) == []
    revoked = Authenticator(load_teams_file(path))
    assert revoked.authenticate([f"Bearer {new_secret}"]) == Unauthenticated(BAD_TOKEN)
    # The rewrite kept everything else.
    kept = load_teams_file(path)
    assert kept.members["alice"].password == ALICE_HASH and kept.teams["team-b"].htpasswd


def test_a_new_member_gets_a_token_and_the_file_keeps_its_mode(path: Path) -> None:
    os.chmod(path, 0o600)
    secret, _ = create_token(path, "team-a", "robot")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Authenticator(load_teams_file(path)).authenticate([f"Bearer {secret}"]) == Identity(
        "robot", "team-a"
    )
    assert not [
        p
        for p in path.parent.iterdir()
        if p.name.startswith(".teams.yaml.") and "lock" not in p.name
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("team-z", "ci"), "no team 'team-z'"),
        (("team-b", "alice"), "belongs to team 'team-a'"),
        (("team-b", "bob"), "comes from an htpasswd file"),
    ],
)
def test_token_management_refuses_what_it_cannot_do(
    path: Path, args: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_token(path, *args)
    with pytest.raises(ConfigError, match="no token 'ffffffffffff'"):
        revoke_token(path, "ffffffffffff")


def test_concurrent_writers_lose_no_token(path: Path) -> None:
    made: list[str] = []

    def make() -> None:
        made.append(create_token(path, "team-a", "ci")[1].id)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(tok.id for _, _, tok in list_tokens(path)) == sorted(made)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "carol:$apr1$abc$0123456789012345678901",
            r"b.htpasswd:2: team team-b: member carol: password: .*MD5",
        ),
        ("carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", r"b.htpasswd:2: .*unsalted SHA-1"),
        ("carol:rqXexS6ZhobKA", r"b.htpasswd:2: .*crypt\(3\)"),
        ("carol:hunter2", r"b.htpasswd:2: .*plain password"),
        ("no colon here", r"b.htpasswd:2: team team-b: not a 'user:hash' line"),
    ],
)
def test_htpasswd_refuses_weak_entries_naming_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = teams_file(tmp_path, htpasswd=f"# team b\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_teams_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("teams:\n  Team A: {}\n", r"teams.yaml:2: teams.Team A: 'Team A' is not a team name"),
        (
            "teams:\n  a:\n    members:\n      alice: {password: hunter2}\n",
            r"teams.yaml:4: teams.a.members.alice.password: not an argon2id or bcrypt hash",
        ),
        (
            "teams:\n  a:\n    members:\n      alice: {pasword: x}\n",
            r"teams.yaml:4: teams.a.members.alice.pasword: unknown field",
        ),
        ("teams:\n  a:\n    members:\n      'al:ice': {}\n", r"'al:ice' is not a member name"),
        (
            "teams:\n  a:\n    members: {alice: {}}\n  b:\n    members: {alice: {}}\n",
            r"member 'alice' is also a member of team 'a'",
        ),
        (
            "teams:\n  a:\n    members:\n      x:\n        tokens: [{id: zz, sha256: x}]\n",
            r"teams.yaml:5: teams.a.members.x.tokens\[0\].id: 'zz' is not a token id",
        ),
    ],
)
def test_errors_name_file_team_member_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "teams.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_teams_file(path)


def test_rules_yaml_names_a_teams_file_or_holds_them_inline(tmp_path: Path, path: Path) -> None:
    named = parse_config("teams: teams.yaml\n", str(tmp_path / "rules.yaml"))
    assert isinstance(named.teams, Teams) and named.teams.file == path
    assert set(named.teams.names) == {"team-a", "team-b"}
    inline = parse_config(
        f"teams:\n  a:\n    members:\n      alice: {{password: '{ALICE_HASH}'}}\n",
        str(tmp_path / "rules.yaml"),
    )
    assert inline.teams is not None and inline.teams.file is None
    assert inline.teams.members["alice"].team == "a"
    assert parse_config("", "rules.yaml").teams is None


# --- whatever arrives, only modgate's own answers and errors come out --------------------

_AUTH = Authenticator(Teams(source="x"))
_SCALARS = st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.none(),
                     st.sampled_from(["$argon2id$x", "$2b$04$" + "a" * 53, "mgt_", "alice", "members", "tokens", "password", "htpasswd", "id", "sha256"]))  # fmt: skip
_YAML = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_SCALARS, inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.lists(st.text(max_size=200), max_size=3))
def test_any_header_gives_an_identity_or_a_reason_never_an_exception(values: list[str]) -> None:
    got = _AUTH.authenticate(values)
    assert isinstance(got, Unauthenticated)  # nobody is a member here


@given(st.binary(max_size=120).map(lambda b: "Basic " + base64.b64encode(b).decode()))
def test_any_basic_credentials_decode_safely(value: str) -> None:
    assert isinstance(_AUTH.authenticate([value]), Unauthenticated)


@given(_YAML)
def test_any_teams_file_is_read_or_refused_with_a_config_error(document: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teams.yaml"
        path.write_text(yaml.safe_dump({"teams": document}))
        with contextlib.suppress(ConfigError):
            load_teams_file(path)
