"""Who may call the admin API: signed requests, checked against the administrators'
keys (no HTTP server here; modgate/admin.py is the server that asks).

A request carries three headers, each exactly once:

    X-Modgate-Admin  the administrator's name: which key signed it
    X-Timestamp      when it was signed, Unix seconds in decimal digits (a fraction allowed)
    X-Signature      hex(HMAC-SHA256(key, canonical)), 64 lowercase hex digits

    canonical = METHOD "\\n" PATH-WITH-QUERY "\\n" TIMESTAMP "\\n" hex(sha256(BODY))

PATH-WITH-QUERY is the request target exactly as sent on the request line, so `curl`
and `openssl dgst -sha256 -hmac KEY` make the same signature (README, "Admin API").
The key is the 64-character hex string itself, used as its ASCII bytes: that is what
`openssl dgst -hmac` does with a key given on its command line.

A request is accepted only when, in this order: the headers are there once each and
well formed, the administrator is known, the timestamp is within WINDOW seconds of now
(and not before this verifier started: a restart forgets the signatures it has seen,
so nothing signed before it may be used again), the signature matches
(`hmac.compare_digest`, constant time), the signature was not seen before, and the key
has the scope the request needs. Signatures are remembered until they leave the window;
that memory is bounded (MAX_REMEMBERED): full, it refuses rather than forget.

Verdicts are values: `Accepted(admin, scopes)` or `Refused(reason)`. The reason is for
modgate's log only: the caller answers every refusal the same way, so a client learns
nothing about which check failed.

Keys live in CONFDIR/admin-keys.json (mode 0600; `modgate admin keygen NAME --scope
...` adds one and writes the administrator's own copy, NAME:KEY, to a file of its own).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modgate.errors import ConfigError

SCOPES = ("read", "cache", "rules", "teams")
WINDOW = 300  # seconds a signature is good for, either side of now
MAX_REMEMBERED = 100_000  # signatures held against replay (~210 bytes each: 20 MB full)
KEYS_FILE = "admin-keys.json"
ADMIN, TIMESTAMP, SIGNATURE = "X-Modgate-Admin", "X-Timestamp", "X-Signature"
HEADERS = (ADMIN, TIMESTAMP, SIGNATURE)
ENV = "MODGATE_ADMIN_KEY"  # NAME:KEY, for the `modgate admin` client

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Unix seconds, with an optional fraction: `modgate admin` signs with milliseconds, so
# the same request sent twice within a second has two signatures (whole seconds made
# the second one a "replay"); `date +%s` in a shell script still works.
_TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
_NOBODY = "0" * 64


@dataclass(frozen=True)
class AdminKey:
    name: str
    secret: str  # 64 hex digits, used as its ASCII bytes
    scopes: frozenset[str]


@dataclass(frozen=True)
class Accepted:
    admin: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Refused:
    reason: str  # for the log only


@dataclass(frozen=True)
class Signed:
    """The signing headers of one request, well formed (not yet checked)."""

    admin: str
    timestamp: str  # as sent: it is what was signed
    signature: str

    @property
    def at(self) -> float:
        return float(self.timestamp)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical(method: str, target: str, timestamp: int | str, body: bytes) -> bytes:
    """What is signed (issue 15 §2): the timestamp exactly as the header carries it."""
    return f"{method}\n{target}\n{timestamp}\n{body_digest(body)}".encode()


def sign(secret: str, method: str, target: str, timestamp: int | str, body: bytes = b"") -> str:
    message = canonical(method, target, timestamp, body)
    return hmac.new(secret.encode("ascii"), message, hashlib.sha256).hexdigest()


def signed_headers(
    key: AdminKey, method: str, target: str, body: bytes = b"", now: float | None = None
) -> dict[str, str]:
    """The three headers that sign a request (the client's side)."""
    ts = f"{time.time() if now is None else now:.3f}"
    return {
        ADMIN: key.name,
        TIMESTAMP: ts,
        SIGNATURE: sign(key.secret, method, target, ts, body),
    }


def parse_headers(headers: Iterable[tuple[str, str]]) -> Signed | Refused:
    """The signing headers of a request (all its headers, as name-value pairs: a name
    given twice is refused, not resolved)."""
    found: dict[str, list[str]] = {h.lower(): [] for h in HEADERS}
    for name, value in headers:
        if name.lower() in found:
            found[name.lower()].append(value)
    for header in HEADERS:
        values = found[header.lower()]
        if len(values) != 1:
            return Refused(f"{header}: {'missing' if not values else 'given more than once'}")
    admin, timestamp, signature = (found[h.lower()][0] for h in HEADERS)
    if not _NAME.fullmatch(admin):
        return Refused(f"{ADMIN}: not an administrator's name")
    if not _TIMESTAMP.fullmatch(timestamp):
        return Refused(f"{TIMESTAMP}: not Unix seconds in decimal digits (a fraction allowed)")
    if not _HEX64.fullmatch(signature):
        return Refused(f"{SIGNATURE}: not 64 lowercase hex digits")
    return Signed(admin, timestamp, signature)


class Verifier:
    """Checks signed requests against `keys` (a callable, so a keys file edited while
    modgate runs applies at once), remembering the signatures it accepted."""

    def __init__(
        self,
        keys: Callable[[], Mapping[str, AdminKey]],
        *,
        window: int = WINDOW,
        max_remembered: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.window = window
        self.max_remembered = max_remembered
        self.clock = clock
        self.not_before = int(clock())
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # a heap: (forget after, signature)

    def check(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        scope: str | None,
    ) -> Accepted | Refused:
        """Whether the request `method target` with `headers` and `body` may do what
        needs `scope` (None: anything a valid key may do)."""
        signed = parse_headers(headers)
        if isinstance(signed, Refused):
            return signed
        return self.check_signed(signed, method, target, body, scope)

    def check_signed(
        self, signed: Signed, method: str, target: str, body: bytes, scope: str | None
    ) -> Accepted | Refused:
        key = self.keys().get(signed.admin)
        if key is None:
            # As long as a known one's check, so the time taken does not tell them apart.
            hmac.compare_digest(sign(_NOBODY, method, target, signed.timestamp, body), "")
            return Refused(f"unknown administrator {signed.admin!r}")
        now = self.clock()
        self._forget(now)
        if signed.at < now - self.window:
            return Refused(f"expired: signed {now - signed.at:.0f}s ago")
        if signed.at > now + self.window:
            return Refused(f"from the future: signed {signed.at - now:.0f}s ahead")
        if signed.at < self.not_before:
            return Refused("signed before this modgate started (replays are not remembered)")
        expected = sign(key.secret, method, target, signed.timestamp, body)
        if not hmac.compare_digest(expected, signed.signature):
            return Refused(f"bad signature by {signed.admin!r}: wrong key, or altered request")
        if signed.signature in self._seen:
            return Refused(f"replayed request of {signed.admin!r}")
        if len(self._seen) >= self.max_remembered:
            return Refused(f"too many requests in {self.window}s to remember against replay")
        self._seen.add(signed.signature)
        heapq.heappush(self._expiry, (signed.at + self.window, signed.signature))
        if scope is not None and scope not in key.scopes:
            return Refused(f"{signed.admin!r} lacks the {scope!r} scope")
        return Accepted(key.name, key.scopes)

    def _forget(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, signature = heapq.heappop(self._expiry)
            self._seen.discard(signature)

    @property
    def remembered(self) -> int:
        return len(self._seen)


# --- the keys file ---------------------------------------------------------------------


def keys_path(confdir: Path) -> Path:
    return confdir / KEYS_FILE


def load_keys(path: Path) -> dict[str, AdminKey]:
    """The administrators' keys in `path`; {} when it does not exist. Raises ConfigError
    when it is malformed or readable by others than its owner."""
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the admin keys: {e.strerror or e}") from e
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{path}: holds secret keys but others may read it (mode {st.st_mode & 0o777:o}); "
            f"chmod 600 {path}"
        )
    try:
        data = json.loads(text)
        admins = data["admins"]
        if not isinstance(admins, dict):
            raise TypeError("admins is not an object")
        out = {}
        for name, entry in admins.items():
            out[name] = _key(name, entry)
        return out
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: not an admin keys file ({e}); write keys with `modgate admin keygen`"
        ) from e


def _key(name: object, entry: object) -> AdminKey:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{name!r}: not an administrator's name")
    if not isinstance(entry, dict):
        raise TypeError(f"admins.{name}: not an object")
    secret, scopes = entry.get("secret"), entry.get("scopes")
    if not isinstance(secret, str) or not _HEX64.fullmatch(secret):
        raise ValueError(f"admins.{name}.secret: not 64 lowercase hex digits")
    if not isinstance(scopes, list) or not set(scopes) <= set(SCOPES):
        raise ValueError(f"admins.{name}.scopes: a list of {', '.join(SCOPES)}")
    return AdminKey(name, secret, frozenset(scopes))


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(scopes)
    if unknown := chosen - set(SCOPES):
        raise ConfigError(f"unknown scope {', '.join(sorted(unknown))}: choose from {SCOPES}")
    if not chosen:
        raise ConfigError(f"give at least one scope: {', '.join(SCOPES)}")
    return chosen


def add_key(path: Path, name: str, scopes: Iterable[str], replace: bool = False) -> AdminKey:
    """Add administrator `name` with a new random key (or give it a new one: `replace`)."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{name!r}: an administrator's name is letters, digits, '.', '_', '-'")
    keys = load_keys(path)
    if name in keys and not replace:
        raise ConfigError(f"{path}: {name} has a key already; --replace gives it a new one")
    key = AdminKey(name, secrets.token_hex(32), check_scopes(scopes))
    keys[name] = key
    _write_keys(path, keys)
    return key


def remove_key(path: Path, name: str) -> bool:
    keys = load_keys(path)
    if keys.pop(name, None) is None:
        return False
    _write_keys(path, keys)
    return True


def _write_keys(path: Path, keys: Mapping[str, AdminKey]) -> None:
    data = {
        "admins": {k.name: {"secret": k.secret, "scopes": sorted(k.scopes)} for k in keys.values()}
    }
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_private(path: Path, text: str) -> None:
    """Write `path` whole (a rename), readable by its owner only from the start."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp made it 0600
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def client_key(text: str, where: str) -> AdminKey:
    """An administrator's own copy of its key: `NAME:KEY` (a key file's content, or
    MODGATE_ADMIN_KEY). The client does not know its scopes: the server does."""
    name, _, secret = text.strip().partition(":")
    if not _NAME.fullmatch(name) or not _HEX64.fullmatch(secret):
        raise ConfigError(f"{where}: not an admin key (NAME:KEY, as `modgate admin keygen` writes)")
    return AdminKey(name, secret, frozenset())


class KeysFile:
    """The keys file, read again whenever it changes on disk (so `modgate admin keygen`
    and `revoke` apply to a running modgate at its next request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._keys: dict[str, AdminKey] = {}

    def __call__(self) -> Mapping[str, AdminKey]:
        try:
            st = self.path.stat()
            now = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            now = None
        if now != self._seen:
            # A broken file refuses everyone (fail closed); the error is the log's.
            self._keys = {}
            self._keys = load_keys(self.path)
            self._seen = now
        return self._keys
