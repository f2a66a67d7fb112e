"""Who is asking: teams, their members, and the credentials that prove a member. Pure: no
mitmproxy (the adapters pass in a header's value and get a value back).

rules.yaml names the teams inline, or a file of their own (`teams: teams.yaml`, a file
whose top level is `teams:` too; modgate rewrites that one when tokens are managed):

    teams:
      team-a:
        members:
          alice: {password: "$argon2id$v=19$..."}   # `modgate teams passwd` makes one
          ci:
            tokens:                                 # `modgate teams token create team-a ci`
              - {id: 3f9a0c1d2e4b, sha256: "…", created: "2026-12-07T12:00:00Z"}
        htpasswd: team-a.htpasswd                   # more members, bcrypt lines only

    authenticate("Basic YWxpY2U6…") -> Identity(name="alice", team="team-a")
    authenticate("Bearer mgt_…")     -> Unauthenticated(reason="unknown or revoked token")

Passwords are argon2id (argon2-cffi) or bcrypt (`$2a$`/`$2b$`/`$2y$`, as `htpasswd -B`
writes them); a plain, MD5 (`$apr1$`), SHA-1 (`{SHA}`) or crypt entry is refused with
the file and line. Tokens are random (256 bits), so they are stored as their SHA-256:
checking one is a dictionary lookup by its id and a constant-time compare, no slow hash.

Password checks are slow by design (~0.3 s for argon2id's defaults, here), and a go
command sends hundreds of requests. So a successful check is remembered for
CACHE_SECONDS, keyed by a salted SHA-256 of the header (the credential itself is never
kept); a reload of the teams builds a new Authenticator, which forgets them all (a
revoked token or changed password stops working at once). Failures are never remembered.
Adapters call `authenticate_fast` on the event loop and, only when it returns None (a
password to check), `authenticate` on a thread.

Errors (ConfigError) name the file, the team, the member and the field:
`teams.yaml:7: teams.team-a.members.alice.password: '$apr1$…' is an MD5 hash; ...`
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from modgate.config import _Node
from modgate.errors import ConfigError

__all__ = [
    "Authentication",
    "Authenticator",
    "Identity",
    "Member",
    "Team",
    "Teams",
    "Token",
    "Unauthenticated",
    "create_token",
    "hash_password",
    "list_tokens",
    "load_teams_file",
    "parse_teams",
    "revoke_token",
    "rotate_token",
]

CACHE_SECONDS = 60.0
CACHE_MAX = 4096
TOKEN_PREFIX = "mgt_"
_TOKEN = re.compile(r"mgt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_TEAM = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Identity:
    """An authenticated member: `name` and the `team` it belongs to."""

    name: str
    team: str


@dataclass(frozen=True)
class Unauthenticated:
    """No identity: `reason` is one line the client may read (it says nothing about which
    members or tokens exist)."""

    reason: str


Authentication = Identity | Unauthenticated


@dataclass(frozen=True)
class Token:
    id: str
    sha256: str  # of the whole token string, hex
    created: str = ""
    label: str = ""


@dataclass(frozen=True)
class Member:
    name: str
    team: str
    password: str = ""  # argon2id or bcrypt hash; "" for tokens only
    tokens: tuple[Token, ...] = ()
    where: str = ""  # "teams.yaml:7" or "team-a.htpasswd:3", for messages
    htpasswd: bool = False  # read from the team's htpasswd file (not modgate's to write)


@dataclass(frozen=True)
class Team:
    name: str
    members: tuple[str, ...] = ()
    htpasswd: str = ""  # the file named, as written


@dataclass(frozen=True)
class Teams:
    """Every team and member; `file` is the teams file modgate may rewrite, or None when
    the teams are written inline in rules.yaml."""

    source: str
    teams: dict[str, Team] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    file: Path | None = None
    digest: str = field(default="", compare=False)  # SHA-256 of the teams file as read
    # Every token by its id: one lookup per request, however many tokens there are.
    _tokens: dict[str, tuple[Member, Token]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for member in self.members.values():
            for token in member.tokens:
                self._tokens[token.id] = (member, token)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.teams)

    def token_owner(self, token_id: str) -> tuple[Member, Token] | None:
        return self._tokens.get(token_id)


# --- parsing -----------------------------------------------------------------------------


def parse_teams(node: _Node, base: Path) -> Teams:
    """The `teams:` value of rules.yaml: a mapping of teams, or the name of a file (relative
    to rules.yaml) whose top level is `teams:`."""
    if isinstance(node.node, yaml.ScalarNode):
        name = node.value()
        if not isinstance(name, str) or not name.strip():
            raise node.error("expected a mapping of teams, or the name of a teams file")
        return load_teams_file(base / name)
    return _teams(node, base, None)


def load_teams_file(path: Path) -> Teams:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read teams file: {e}") from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if root is None:
        return Teams(source=str(path), file=path, digest=digest)
    top = _Node(str(path), root, "").mapping({"teams"}, required={"teams"})
    return replace(_teams(top["teams"], path.parent, path), digest=digest)


def _teams(node: _Node, base: Path, file: Path | None) -> Teams:
    if not isinstance(node.node, yaml.MappingNode):
        raise node.error("expected a mapping of team names to {members, htpasswd}")
    teams: dict[str, Team] = {}
    members: dict[str, Member] = {}
    for key_node, _ in node.node.value:
        name = str(key_node.value)
        if not _TEAM.fullmatch(name):
            raise _Node(node.source, key_node, f"{node.where}.{name}").error(
                f"{name!r} is not a team name (lower-case letters, digits, '.', '_', '-')"
            )
    fields = node.mapping({str(k.value) for k, _ in node.node.value})
    for name, team_node in fields.items():
        team_fields = team_node.mapping({"members", "htpasswd"})
        found: list[Member] = []
        if "members" in team_fields:
            found += _members(team_fields["members"], name)
        htpasswd = ""
        if "htpasswd" in team_fields:
            htpasswd = team_fields["htpasswd"].convert(_filename)
            found += read_htpasswd(base / htpasswd, name)
        for member in found:
            if member.name in members:
                other = members[member.name]
                raise ConfigError(
                    f"{member.where}: teams.{name}: member {member.name!r} is also a member "
                    f"of team {other.team!r} ({other.where}): a member belongs to one team"
                )
            members[member.name] = member
        teams[name] = Team(name, tuple(m.name for m in found), htpasswd)
    _unique_token_ids(members)
    return Teams(source=node.source, teams=teams, members=members, file=file)


def _members(node: _Node, team: str) -> list[Member]:
    if not isinstance(node.node, yaml.MappingNode):
        raise node.error("expected a mapping of member names to {password, tokens}")
    out = []
    for key_node, value_node in node.node.value:
        name = str(key_node.value)
        where = f"{node.where}.{name}"
        if not _MEMBER.fullmatch(name):
            raise _Node(node.source, key_node, where).error(
                f"{name!r} is not a member name (letters, digits, '.', '_', '@', '+', '-'; no ':')"
            )
        fields = _Node(node.source, value_node, where).mapping({"password", "tokens"})
        password = ""
        if "password" in fields:
            password = fields["password"].convert(_password_hash)
        tokens: tuple[Token, ...] = ()
        if "tokens" in fields:
            tokens = tuple(_token(n) for n in fields["tokens"].sequence())
        line = value_node.start_mark.line + 1
        out.append(Member(name, team, password, tokens, f"{node.source}:{line}"))
    return out


def _token(node: _Node) -> Token:
    fields = node.mapping({"id", "sha256", "created", "label"}, required={"id", "sha256"})
    token_id = str(fields["id"].value())
    if not _TOKEN_ID.fullmatch(token_id):
        raise fields["id"].error(f"{token_id!r} is not a token id (12 hex digits)")
    digest = str(fields["sha256"].value())
    if not _SHA256.fullmatch(digest):
        raise fields["sha256"].error("expected the token's SHA-256, 64 lower-case hex digits")
    created = str(fields["created"].value()) if "created" in fields else ""
    label = str(fields["label"].value()) if "label" in fields else ""
    return Token(token_id, digest, created, label)


def _unique_token_ids(members: dict[str, Member]) -> None:
    seen: dict[str, str] = {}
    for member in members.values():
        for token in member.tokens:
            if token.id in seen:
                raise ConfigError(
                    f"{member.where}: token {token.id} of {member.name!r} has the id of a "
                    f"token of {seen[token.id]!r}: remove one (`modgate teams token revoke`)"
                )
            seen[token.id] = member.name


def _filename(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a file name")
    return value


def _password_hash(value: Any) -> str:
    text = str(value) if value is not None else ""
    why = weak_hash(text)
    if why:
        raise ValueError(why)
    return text


def weak_hash(text: str) -> str:
    """Why `text` is not a password hash modgate accepts, or "" when it is one."""
    shown = f"{text[:8]}…" if len(text) > 8 else text
    fix = "make one with `modgate teams passwd` (argon2id) or `htpasswd -nB USER` (bcrypt)"
    if text.startswith("$argon2id$") or text.startswith("$argon2i$"):
        return ""
    if re.fullmatch(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", text):
        return ""
    if text.startswith("$apr1$") or text.startswith("$1$"):
        return f"{shown!r} is an MD5 hash, which modgate refuses; {fix}"
    if text.startswith("{SHA}"):
        return f"{shown!r} is an unsalted SHA-1 hash, which modgate refuses; {fix}"
    if text.startswith("$5$") or text.startswith("$6$") or re.fullmatch(r"[./A-Za-z0-9]{13}", text):
        return f"{shown!r} is a crypt(3) hash, which modgate refuses; {fix}"
    return f"not an argon2id or bcrypt hash (a plain password?), which modgate refuses; {fix}"


def read_htpasswd(path: Path, team: str) -> list[Member]:
    """Members of `team` from an htpasswd file: `user:hash` lines, bcrypt hashes only."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read htpasswd file of team {team!r}: {e}") from e
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, colon, hashed = line.strip().partition(":")
        if not colon or not _MEMBER.fullmatch(user):
            raise ConfigError(f"{path}:{number}: team {team}: not a 'user:hash' line")
        if why := weak_hash(hashed):
            raise ConfigError(f"{path}:{number}: team {team}: member {user}: password: {why}")
        out.append(Member(user, team, hashed, (), f"{path}:{number}", htpasswd=True))
    return out


# --- checking credentials --------------------------------------------------------------


def hash_password(password: str) -> str:
    """An argon2id hash of `password`, with argon2-cffi's default (RFC 9106) parameters."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def _verify_password(hashed: str, password: str) -> bool:
    if hashed.startswith("$argon2"):
        from argon2 import PasswordHasher
        from argon2.exceptions import Argon2Error, InvalidHashError

        try:
            return PasswordHasher().verify(hashed, password)
        except (Argon2Error, InvalidHashError):
            return False
    import bcrypt

    data = password.encode("utf-8")
    if len(data) > 72:  # bcrypt reads 72 bytes; newer bcrypt raises past them
        return False
    try:
        return bcrypt.checkpw(data, hashed.encode("ascii"))
    except ValueError:
        return False


# A hash to check unknown users' passwords against, so that an unknown user takes as
# long as a wrong password: the answer's timing says nothing about who exists.
_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY[0]


MISSING = "authentication required"
MALFORMED = "malformed credentials (expected Basic user:password, or Bearer <token>)"
WRONG = "wrong user name or password"
BAD_TOKEN = "unknown or revoked token"


@dataclass(frozen=True)
class _Credential:
    user: str
    secret: str
    token: bool  # `secret` is a token (Bearer, or a Basic password shaped like one)


def parse_header(value: str) -> _Credential | Unauthenticated:
    """An Authorization or Proxy-Authorization value (RFC 7617 Basic, RFC 6750 Bearer)."""
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer" and rest and " " not in rest:
        return _Credential("", rest, True)
    if scheme.lower() != "basic" or not rest or " " in rest:
        return Unauthenticated(MALFORMED)
    try:
        decoded = base64.b64decode(rest, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return Unauthenticated(MALFORMED)
    user, colon, secret = decoded.partition(":")
    if not colon or not user:
        return Unauthenticated(MALFORMED)
    return _Credential(user, secret, secret.startswith(TOKEN_PREFIX))


class Authenticator:
    """Checks credentials against one `Teams`. Thread-safe: `authenticate` runs on threads."""

    def __init__(self, teams: Teams, clock: Any = time.monotonic) -> None:
        self.teams = teams
        self.clock = clock
        self._salt = secrets.token_bytes(16)
        self._cache: dict[bytes, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def _key(self, value: str) -> bytes:
        return hashlib.sha256(self._salt + value.encode("utf-8", "surrogateescape")).digest()

    def authenticate_fast(self, values: list[str]) -> Authentication | None:
        """The answer when it needs no password hash (none or several headers, malformed,
        a token, a credential checked recently), else None: call `authenticate`."""
        if not values:
            return Unauthenticated(MISSING)
        if len(values) > 1:
            # Two proxies (or a client and an attacker) disagreeing on who this is.
            return Unauthenticated("more than one credentials header")
        with self._lock:
            known = self._cache.get(self._key(values[0]))
        if known is not None and self.clock() < known[0]:
            return known[1]
        parsed = parse_header(values[0])
        if isinstance(parsed, Unauthenticated):
            return parsed
        if parsed.token:
            return self._token(parsed)
        return None

    def authenticate(self, values: list[str]) -> Authentication:
        """The identity the headers prove (all values of one header field), or why not.
        May take a password hash's time: call it off the event loop."""
        fast = self.authenticate_fast(values)
        if fast is not None:
            return fast
        parsed = parse_header(values[0])
        assert isinstance(parsed, _Credential)
        member = self.teams.members.get(parsed.user)
        if member is None or not member.password:
            _verify_password(_dummy_hash(), parsed.secret)
            return Unauthenticated(WRONG)
        if not _verify_password(member.password, parsed.secret):
            return Unauthenticated(WRONG)
        identity = Identity(member.name, member.team)
        self._remember(values[0], identity)
        return identity

    def _token(self, cred: _Credential) -> Authentication:
        m = _TOKEN.fullmatch(cred.secret)
        if m is None:
            return Unauthenticated(BAD_TOKEN)
        owner = self.teams.token_owner(m.group(1))
        digest = hashlib.sha256(cred.secret.encode()).hexdigest()
        if owner is None:
            hmac.compare_digest(digest, "0" * 64)
            return Unauthenticated(BAD_TOKEN)
        member, token = owner
        if not hmac.compare_digest(digest, token.sha256):
            return Unauthenticated(BAD_TOKEN)
        if cred.user and cred.user != member.name:
            # Basic user:token: the user must be the token's member, or a leaked token
            # could be presented under anyone's name in the logs.
            return Unauthenticated(BAD_TOKEN)
        return Identity(member.name, member.team)

    def _remember(self, value: str, identity: Identity) -> None:
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[self._key(value)] = (self.clock() + CACHE_SECONDS, identity)


def netrc_credentials(url: str) -> str:
    """The Authorization go sends to `url` from .netrc (NETRC, else ~/.netrc): Basic for
    the machine `host:port` (go 1.24+, GOAUTH=netrc), else `host`; only over https, as
    go; "" when there is none. For modgate's own clients of its endpoint (doctor,
    prefetch)."""
    import netrc
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return ""
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return ""
    for machine in (parts.netloc, parts.hostname):
        found = entries.authenticators(machine)
        if found is not None:
            login, _, password = found
            return "Basic " + base64.b64encode(f"{login}:{password or ''}".encode()).decode()
    return ""


# --- managing tokens (the CLI, and the admin API) ---------------------------------------


def _mint(teams: Teams, label: str) -> tuple[str, Token]:
    """A new token (`mgt_<12 hex id>_<256 random bits>`) and what is stored of it; its id
    differs from every token's in `teams`."""
    while True:
        token_id = secrets.token_hex(6)
        if teams.token_owner(token_id) is None:
            break
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return secret, Token(token_id, digest, _now(), " ".join(label.split())[:60])


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_token(path: Path, team: str, member: str, label: str = "") -> tuple[str, Token]:
    """A new token for `member` of `team` (the member is added when new). Returns the
    secret, shown once: only its SHA-256 is written."""
    with _locked(path):
        teams = load_teams_file(path)
        if team not in teams.teams:
            raise ConfigError(f"{path}: no team {team!r} (teams: {', '.join(sorted(teams.teams))})")
        known = teams.members.get(member)
        if known is not None and known.team != team:
            raise ConfigError(f"{path}: member {member!r} belongs to team {known.team!r}")
        if not _MEMBER.fullmatch(member):
            raise ConfigError(f"{member!r} is not a member name")
        if known is not None and known.htpasswd:
            raise ConfigError(
                f"{known.where}: {member!r} comes from an htpasswd file: give tokens to a "
                "member of the teams file"
            )
        secret, token = _mint(teams, label)
        base = known or Member(member, team, where=str(path))
        _write(path, teams, replace(base, tokens=(*base.tokens, token)))
    return secret, token


def revoke_token(path: Path, token_id: str) -> Member:
    """Remove a token; returns its member. A reload of the teams file stops it."""
    member, _ = _replace_token(path, token_id, lambda teams, old: None)
    return member


def rotate_token(path: Path, token_id: str) -> tuple[str, Token]:
    """A new token for the member of `token_id`, which is revoked, in one write."""
    _, minted = _replace_token(path, token_id, lambda teams, old: _mint(teams, old.label))
    assert minted is not None
    return minted


def _replace_token(
    path: Path, token_id: str, new: Callable[[Teams, Token], tuple[str, Token] | None]
) -> tuple[Member, tuple[str, Token] | None]:
    """Take `token_id` from its member, and give it what `new` mints instead (if anything),
    in one locked rewrite of the teams file."""
    with _locked(path):
        teams = load_teams_file(path)
        owner = teams.token_owner(token_id)
        if owner is None:
            raise ConfigError(f"{path}: no token {token_id!r}")
        member, old = owner
        minted = new(teams, old)
        kept = tuple(t for t in member.tokens if t.id != token_id)
        added = (minted[1],) if minted is not None else ()
        _write(path, teams, replace(member, tokens=(*kept, *added)))
    return member, minted


def list_tokens(path: Path) -> list[tuple[str, str, Token]]:
    """(team, member, token) of every token, by team and member."""
    teams = load_teams_file(path)
    return [
        (m.team, m.name, t)
        for m in sorted(teams.members.values(), key=lambda m: (m.team, m.name))
        for t in m.tokens
    ]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer of the teams file at a time (the CLI and the admin API may race)."""
    import fcntl

    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, teams: Teams, changed: Member) -> None:
    """Rewrite the teams file with `changed` in place of its old self, atomically: a
    temporary file beside it, flushed, then renamed over it (a reader sees the old file
    or the new one, never half). PyYAML cannot keep comments; the file is modgate's to
    write (rules.yaml, which names it, keeps the comments)."""
    members = {**teams.members, changed.name: changed}
    doc: dict[str, Any] = {}
    for name, team in teams.teams.items():
        entry: dict[str, Any] = {}
        inline = {
            m.name: _member_doc(m) for m in members.values() if m.team == name and not m.htpasswd
        }
        if inline:
            entry["members"] = inline
        if team.htpasswd:
            entry["htpasswd"] = team.htpasswd
        doc[name] = entry
    text = (
        "# Written by modgate (`modgate teams token ...`): comments here are not kept.\n"
        + yaml.safe_dump({"teams": doc}, sort_keys=False, default_flow_style=False)
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _member_doc(member: Member) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if member.password:
        out["password"] = member.password
    if member.tokens:
        out["tokens"] = [{k: v for k, v in _token_doc(t).items() if v} for t in member.tokens]
    return out


def _token_doc(token: Token) -> dict[str, str]:
    return {"id": token.id, "sha256": token.sha256, "created": token.created, "label": token.label}
