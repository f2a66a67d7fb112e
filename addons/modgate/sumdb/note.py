"""Keys and signed notes of the Go checksum database; no I/O.

Follows golang.org/x/mod/sumdb/note/note.go (vendored in Go's source tree under
src/cmd/vendor/golang.org/x/mod/sumdb/note/) rule for rule, and the "Checksum
database" section of the Go modules reference. Ed25519 comes from `cryptography`.

Keys are text: a verifier key is ``<name>+<hash>+<keydata>``, a signer key
``PRIVATE+KEY+<name>+<hash>+<keydata>``. ``hash`` is eight hex digits, the first
four bytes (big-endian) of SHA-256(name + "\\n" + public keydata); ``keydata`` is
base64 of an algorithm byte (1, Ed25519) and the 32-byte public key or seed.

A signed note is text ending in a newline, a blank line, then one or more lines
``— <name> <base64(key hash (4 bytes) + signature)>``. The whole note is UTF-8
with no control character but newline.

The errors here are the first branches of the package's tree (see
`modgate.sumdb`); their messages are note.go's own:

    SumdbError
     ├── KeyFormatError         "malformed verifier id", "invalid verifier hash", ...
     └── NoteError              "malformed note", "ambiguous key <name>+<hash>"
          ├── UnknownVerifierError  "note has no verifiable signatures"
          └── BadSignatureError     "invalid signature for key <name>+<hash>"
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from modgate.errors import ModgateError

ALG_ED25519 = 1
MAX_SIGNATURES = 100  # note.Open: "Avoid spending forever parsing a note with many signatures."
SIG_PREFIX = "— "  # em dash, space

# Go's unicode.IsSpace (the White_Space property): str.isspace() differs (it counts
# U+001C..U+001F, which Go accepts in a name).
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")


class SumdbError(ModgateError):
    """Base of every checksum-database error: bad keys, notes, trees or proofs."""

    def within(self, context: str) -> Self:
        """The same error with its message prefixed by `context`, as client.go wraps errors."""
        err = copy.copy(self)
        err.args = (f"{context}: {self}",)
        return err


class KeyFormatError(SumdbError):
    """A verifier or signer key is malformed, or its hash does not match its key."""


class NoteError(SumdbError):
    """A signed note is malformed or cannot be trusted."""


class UnknownVerifierError(NoteError):
    """No signature on the note is by a known key (note.UnverifiedNoteError)."""


class BadSignatureError(NoteError):
    """A signature by a known key does not verify (note.InvalidSignatureError)."""


def decode_base64(text: str) -> bytes | None:
    """Go's base64.StdEncoding.DecodeString: padded, strict, CR and LF skipped; None if invalid."""
    try:
        return binascii.a2b_base64(text.replace("\r", "").replace("\n", ""), strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None


def is_valid_name(name: str) -> bool:
    """note.isValidName: non-empty UTF-8 with no Unicode space and no '+'."""
    return (
        name != ""
        and not any(c in _GO_SPACE or "\ud800" <= c <= "\udfff" for c in name)
        and "+" not in name
    )


def key_hash(name: str, key: bytes) -> int:
    """The 32-bit hash naming a key: SHA-256(name + "\\n" + key), first four bytes big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """One server public key (note.NewVerifier's result)."""

    name: str
    key_hash: int
    public_key: bytes  # 32 raw Ed25519 bytes

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Whether `sig` is this key's Ed25519 signature of `msg`."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, msg)
        except InvalidSignature:
            return False
        return True

    @property
    def key_text(self) -> str:
        """The verifier key text, ``<name>+<hash>+<keydata>``."""
        return verifier_key(self.name, self.public_key)


@dataclass(frozen=True)
class Signer:
    """One server private key (note.NewSigner's result); for tests and test servers."""

    name: str
    key_hash: int
    seed: bytes = field(repr=False)  # 32-byte Ed25519 seed

    def sign(self, msg: bytes) -> bytes:
        """The Ed25519 signature of `msg` (deterministic)."""
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(msg)

    @property
    def verifier(self) -> Verifier:
        """The matching public key."""
        return Verifier(self.name, self.key_hash, _public_key(self.seed))


def _public_key(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def _split_key(text: str) -> tuple[str, str, bytes | None]:
    """`<name>+<hash>+<keydata>` as name, hash text, decoded keydata (strings.Cut twice)."""
    name, _, rest = text.partition("+")
    hash16, _, key64 = rest.partition("+")
    return name, hash16, decode_base64(key64)


def parse_verifier_key(text: str) -> Verifier:
    """note.NewVerifier: parse ``<name>+<hash>+<keydata>``, checking the hash against the key."""
    name, hash16, key = _split_key(text)
    if not _HEX8.fullmatch(hash16) or key is None or not is_valid_name(name) or not key:
        raise KeyFormatError("malformed verifier id")
    if int(hash16, 16) != key_hash(name, key):
        raise KeyFormatError("invalid verifier hash")
    if key[0] != ALG_ED25519:
        raise KeyFormatError("unknown verifier algorithm")
    if len(key) != 33:
        raise KeyFormatError("malformed verifier id")
    return Verifier(name, int(hash16, 16), key[1:])


def parse_signer_key(text: str) -> Signer:
    """note.NewSigner: parse ``PRIVATE+KEY+<name>+<hash>+<keydata>``; errors read like Go's."""
    priv1, _, rest = text.partition("+")
    priv2, _, rest = rest.partition("+")
    name, hash16, key = _split_key(rest)
    if (
        (priv1, priv2) != ("PRIVATE", "KEY")
        or not _HEX8.fullmatch(hash16)
        or key is None
        or not is_valid_name(name)
        or not key
    ):
        raise KeyFormatError("malformed verifier id")
    if key[0] != ALG_ED25519:
        raise KeyFormatError("unknown verifier algorithm")
    if len(key) != 33:
        raise KeyFormatError("malformed verifier id")
    seed = key[1:]
    if int(hash16, 16) != key_hash(name, bytes([ALG_ED25519]) + _public_key(seed)):
        raise KeyFormatError("invalid verifier hash")
    return Signer(name, int(hash16, 16), seed)


def verifier_key(name: str, public_key: bytes) -> str:
    """note.NewEd25519VerifierKey: the verifier key text for an Ed25519 public key."""
    if len(public_key) != 32:
        raise KeyFormatError(f"invalid public key size {len(public_key)}, expected 32")
    keydata = bytes([ALG_ED25519]) + public_key
    return f"{name}+{key_hash(name, keydata):08x}+{base64.b64encode(keydata).decode()}"


def generate_key(name: str) -> tuple[str, str]:
    """note.GenerateKey: a fresh (signer key, verifier key) pair of texts for `name`."""
    if not is_valid_name(name):
        raise KeyFormatError(f"invalid key name {name!r}")
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    verifier = verifier_key(name, _public_key(seed))
    hash16 = verifier.split("+")[1]
    seed64 = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
    return f"PRIVATE+KEY+{name}+{hash16}+{seed64}", verifier


@dataclass(frozen=True)
class Signature:
    """One signature line of a note: key name, key hash, base64 of hash and signature."""

    name: str
    key_hash: int
    base64: str


@dataclass(frozen=True)
class Note:
    """An opened note: its text and its verified and unverified (unknown key) signatures."""

    text: str
    sigs: tuple[Signature, ...]
    unverified_sigs: tuple[Signature, ...] = ()


def sign(text: str, *signers: Signer) -> bytes:
    """note.Sign: `text` (ending in a newline), a blank line, one signature line per signer."""
    if not text.endswith("\n"):
        raise NoteError("malformed note")
    msg = text.encode()
    lines = []
    for signer in signers:
        raw = signer.key_hash.to_bytes(4, "big") + signer.sign(msg)
        lines.append(f"{SIG_PREFIX}{signer.name} {base64.b64encode(raw).decode()}\n")
    return msg + b"\n" + "".join(lines).encode()


def _verifier_map(verifiers: Iterable[Verifier]) -> dict[tuple[str, int], list[Verifier]]:
    known: dict[tuple[str, int], list[Verifier]] = {}
    for v in verifiers:
        same = known.setdefault((v.name, v.key_hash), [])
        if v not in same:
            same.append(v)
    return known


def _split_note(msg: bytes) -> tuple[str, list[str]]:
    """The text and the signature lines of a note, or NoteError."""
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("malformed note") from None
    if any(c < " " and c != "\n" for c in decoded):
        raise NoteError("malformed note")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note")
    text, sigs = decoded[: split + 1], decoded[split + 2 :]
    if not sigs.endswith("\n"):
        raise NoteError("malformed note")
    return text, sigs[:-1].split("\n")


def _parse_signature_line(line: str) -> tuple[Signature, bytes]:
    """A signature line as its Signature and the raw Ed25519 signature bytes."""
    if not line.startswith(SIG_PREFIX):
        raise NoteError("malformed note")
    name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
    raw = decode_base64(b64)
    if raw is None or not is_valid_name(name) or not b64 or len(raw) < 5:
        raise NoteError("malformed note")
    return Signature(name, int.from_bytes(raw[:4], "big"), b64), raw[4:]


def open_note(msg: bytes, verifiers: Iterable[Verifier]) -> Note:
    """note.Open: parse `msg` and verify its signatures by the known `verifiers`.

    Signatures by unknown keys are kept as unverified; one bad signature by a known
    key fails the whole note; at least one good signature by a known key is required.
    """
    known = _verifier_map(verifiers)
    text, lines = _split_note(msg)
    verified: dict[tuple[str, int], Signature] = {}
    unverified: dict[str, Signature] = {}
    for count, line in enumerate(lines, start=1):
        sig, raw = _parse_signature_line(line)
        if count > MAX_SIGNATURES:
            raise NoteError("malformed note")
        candidates = known.get((sig.name, sig.key_hash), [])
        if not candidates:
            unverified.setdefault(line, sig)
            continue
        if len(candidates) > 1:
            raise NoteError(f"ambiguous key {sig.name}+{sig.key_hash:08x}")
        if (sig.name, sig.key_hash) in verified:
            continue
        if not candidates[0].verify(text.encode(), raw):
            raise BadSignatureError(f"invalid signature for key {sig.name}+{sig.key_hash:08x}")
        verified[(sig.name, sig.key_hash)] = sig
    if not verified:
        raise UnknownVerifierError("note has no verifiable signatures")
    return Note(text, tuple(verified.values()), tuple(unverified.values()))
