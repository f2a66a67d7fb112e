"""One audit entry as bytes, its hash, and the walk that verifies a whole log. No I/O
beyond what the caller hands in.

A log is a file of lines, one entry each, in the order they were appended:

    {"fields":{...},"id":"…","kind":"served","prev":"<hex>","seq":7,"time":1765000000.5,
     "hash":"<hex>"}

Everything before `,"hash"` is the canonical JSON of the entry (keys sorted, no spaces,
ASCII only: `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)`),
and `hash` is the SHA-256 of those bytes with the closing brace, so a verifier hashes
the line's own bytes and never re-serialises. `prev` is the hash of the entry before
(GENESIS for the first), `seq` counts from 1 without gaps: an edit breaks the entry's
hash, a deletion, insertion or reordering breaks `seq` and `prev`.

Rewriting the chain from some entry on (recomputing every hash after an edit) is what
signatures catch. Every so often the writer appends a *checkpoint* entry whose `sig` is
an Ed25519 signature over the sequence number and hash of the entry before it; and after
every batch it rewrites the *head* (log.py), a signed note of the log's last entry.
Truncating the log leaves the head pointing past its end.

A *torn* line is what a process killed in the middle of a write leaves: no newline at
the end. The next writer finishes the line with a newline and appends a `torn` entry
naming its offset, length and SHA-256; verify reports such a line as recovered (a
warning, the decision it held is lost) and anything else that is not a valid entry as
the first bad one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

GENESIS = "0" * 64
CHECKPOINT, TORN = "checkpoint", "torn"
_HASH_AT = b',"hash":"'
_SUFFIX = len(_HASH_AT) + 64 + 2  # ,"hash":"<64 hex>"}
# Canonical JSON: one encoder, made once (json.dumps with options builds one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    time: float
    kind: str
    fields: dict[str, Any]
    prev: str
    hash: str
    id: str = ""  # the writer's own name for it: "<run>.<n>" (writer.py), "" for its own

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "fields": self.fields,
                "id": self.id, "prev": self.prev, "hash": self.hash}  # fmt: skip


def encode(
    seq: int, time: float, kind: str, fields: dict[str, Any], prev: str, id: str = ""
) -> tuple[bytes, str]:
    """The line (newline included) of an entry, and its hash."""
    return encode_raw(seq, time, kind, canonical(fields), prev, id)


def canonical(value: object) -> bytes:
    """`value` as canonical JSON (keys sorted, no spaces, ASCII)."""
    return _CANONICAL.encode(value).encode()


def encode_raw(
    seq: int, time: float, kind: str, fields: bytes, prev: str, id: str = ""
) -> tuple[bytes, str]:
    """`encode`, with the fields already canonical JSON (`canonical(fields)`, made once
    when the entry was submitted): the same bytes as the canonical JSON of the whole
    entry, built without encoding the fields again on the writer's thread."""
    body = b'{"fields":%s,"id":%s,"kind":%s,"prev":"%s","seq":%d,"time":%s}' % (
        fields, canonical(id), canonical(kind), prev.encode(), seq,
        repr(round(float(time), 6)).encode(),
    )  # fmt: skip
    digest = hashlib.sha256(body).hexdigest()
    return b'%s%s%s"}\n' % (body[:-1], _HASH_AT, digest.encode()), digest


class BadLine(ValueError):
    """A line that is not an entry, or whose content does not match its hash."""


def _checked(line: bytes) -> tuple[bytes, str]:
    """The canonical body of the entry on `line` and its hash, checked against its bytes."""
    if len(line) < _SUFFIX + 2 or line[-_SUFFIX:-66] != _HASH_AT or not line.endswith(b'"}'):
        raise BadLine("not an audit entry (no hash at its end)")
    digest = line[-66:-2].decode("ascii", "replace")
    body = line[:-_SUFFIX] + b"}"
    if hashlib.sha256(body).hexdigest() != digest:
        raise BadLine("its content does not match its hash: the entry was edited")
    return body, digest


def decode(line: bytes) -> Entry:
    """The entry on `line` (without its newline), its hash checked against its bytes."""
    body, digest = _checked(line)
    try:
        obj = json.loads(body)
        entry = Entry(
            int(obj["seq"]), float(obj["time"]), str(obj["kind"]), dict(obj["fields"]),
            str(obj["prev"]), digest, str(obj.get("id", "")),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as e:
        raise BadLine(f"not an audit entry: {e}") from e
    return entry


# What verify reads of most entries, from the end of the canonical body (keys sorted:
# fields, id, kind, prev, seq, time). json.loads of the whole line costs ~7 us; this, with
# the hash, ~2: verify needs the fields only of checkpoints and torn entries.
_LINK = re.compile(
    rb',"id":"[0-9A-Za-z._-]*","kind":"([a-z-]+)","prev":"([0-9a-f]{64})","seq":([0-9]+),'
    rb'"time":[0-9.eE+-]+\}\Z'
)


def link(line: bytes) -> tuple[int, str, str, str]:
    """(seq, prev, kind, hash) of the entry on `line`, its hash checked; raises BadLine."""
    body, digest = _checked(line)
    m = _LINK.search(body)
    if m is None or not body.startswith(b'{"fields":{'):
        raise BadLine("not an audit entry (not in canonical form)")
    return int(m[3]), m[2].decode(), m[1].decode(), digest


# --- signatures -----------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """A short name for a key (the first 16 hex digits of its raw bytes' SHA-256)."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _message(what: bytes, seq: int, digest: str) -> bytes:
    return b"modgate audit %s\n%d %s\n" % (what, seq, digest.encode())


def checkpoint_fields(key: Ed25519PrivateKey, seq: int, digest: str) -> dict[str, Any]:
    """The fields of a checkpoint that vouches for entry `seq` (hash `digest`) and the
    whole chain before it."""
    sig = key.sign(_message(b"checkpoint", seq, digest))
    return {"key": key_id(key.public_key()), "signed": seq, "sig": base64.b64encode(sig).decode()}


def _signed(public: Ed25519PublicKey, message: bytes, sig: object) -> bool:
    try:
        public.verify(base64.b64decode(str(sig), validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Head:
    """The signed note of a log's last entry (and last checkpoint), rewritten after every
    batch: what truncation cannot take back."""

    seq: int
    hash: str
    checkpoint: int  # seq of the last checkpoint, 0 for none
    checkpoint_time: float
    key: str
    sig: str

    @staticmethod
    def make(key: Ed25519PrivateKey, seq: int, digest: str, checkpoint: int, when: float) -> Head:
        sig = key.sign(_message(b"head", seq, digest))
        return Head(seq, digest, checkpoint, when, key_id(key.public_key()),
                    base64.b64encode(sig).decode())  # fmt: skip

    def signed_by(self, public: Ed25519PublicKey) -> bool:
        return _signed(public, _message(b"head", self.seq, self.hash), self.sig)

    def to_bytes(self) -> bytes:
        return _CANONICAL.encode(
            {"seq": self.seq, "hash": self.hash, "checkpoint": self.checkpoint,
             "checkpoint_time": self.checkpoint_time, "key": self.key, "sig": self.sig}
        ).encode() + b"\n"  # fmt: skip

    @staticmethod
    def from_bytes(data: bytes) -> Head:
        try:
            o = json.loads(data)
            return Head(int(o["seq"]), str(o["hash"]), int(o["checkpoint"]),
                        float(o["checkpoint_time"]), str(o["key"]), str(o["sig"]))  # fmt: skip
        except (ValueError, KeyError, TypeError) as e:
            raise BadLine(f"not an audit head: {e}") from e


# --- verify ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """The first bad entry: its line (from 1), byte offset, the seq it should have had."""

    line: int
    offset: int
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"entry {self.seq} (line {self.line}, byte {self.offset}): {self.reason}"


@dataclass
class Report:
    entries: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoints: int = 0
    last_checkpoint: int = 0  # seq of the last checkpoint
    problem: Problem | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def lines(stream: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line without its newline, whether it had one) for each line of `stream`."""
    offset = 0
    for raw in stream:
        complete = raw.endswith(b"\n")
        yield offset, raw[:-1] if complete else raw, complete
        offset += len(raw)


def verify(
    log: Iterable[tuple[int, bytes, bool]],
    public: Ed25519PublicKey,
    head: Head | None,
) -> Report:
    """Walk the log: every entry's hash, seq and prev, every checkpoint's signature, a
    torn line only where the entry after it records it, and the head (when given) signed
    and pointing at an entry the log holds. The report names the first bad entry."""
    report = Report()
    prev, seq = GENESIS, 1
    bad: tuple[int, int, bytes, str] | None = None  # a line that is not an entry, yet
    at_head: str | None = None
    number = 0
    for number, (offset, line, complete) in enumerate(log, 1):
        if not complete:
            reason = (
                f"torn: {len(line)} bytes with no end (modgate was killed while writing it; "
                "the next start records it as torn)"
            )
            report.problem = Problem(number, offset, seq, reason)
            return report
        try:
            entry_seq, entry_prev, kind, digest = link(line)
            entry = decode(line) if kind in (CHECKPOINT, TORN) else None
        except BadLine as e:
            if bad is not None:
                break
            bad = (number, offset, line, str(e))
            continue
        if bad is not None:
            if entry is None or not _acknowledges(entry, bad[1], bad[2]):
                break
            report.warnings.append(
                f"line {bad[0]} (byte {bad[1]}) is a torn write, recorded as such by entry "
                f"{entry.seq}: what it held was written again from its writer's journal, "
                "unless that journal was lost too"
            )
            bad = None
        if entry_seq != seq:
            report.problem = Problem(
                number, offset, seq,
                f"has seq {entry_seq} (an entry was deleted, inserted or moved here)",
            )  # fmt: skip
            return report
        if entry_prev != prev:
            report.problem = Problem(
                number, offset, seq,
                "does not chain to the entry before it (an entry was replaced or inserted)",
            )  # fmt: skip
            return report
        if entry is not None and kind == CHECKPOINT:
            f = entry.fields
            if f.get("signed") != seq - 1 or not _signed(
                public, _message(b"checkpoint", seq - 1, prev), f.get("sig")
            ):
                report.problem = Problem(
                    number, offset, seq,
                    "checkpoint signature does not verify with this public key (forged, or "
                    "the chain before it was rewritten)",
                )  # fmt: skip
                return report
            report.checkpoints += 1
            report.last_checkpoint = seq
        if head is not None and seq == head.seq:
            at_head = digest
        report.entries += 1
        prev, seq = digest, seq + 1
    if bad is not None:
        report.problem = Problem(bad[0], bad[1], seq, bad[3])
        return report
    report.last_seq, report.last_hash = seq - 1, prev
    _check_head(report, public, head, at_head, number)
    return report


def _acknowledges(entry: Entry, offset: int, line: bytes) -> bool:
    f = entry.fields
    return (
        entry.kind == TORN
        and f.get("offset") == offset
        and f.get("length") == len(line)
        and f.get("sha256") == hashlib.sha256(line).hexdigest()
    )


def _check_head(
    report: Report, public: Ed25519PublicKey, head: Head | None, at_head: str | None, lines: int
) -> None:
    if head is None:
        return
    where = Problem(lines + 1, -1, report.last_seq + 1, "")
    if not head.signed_by(public):
        reason = "the head's signature does not verify with this public key (forged head)"
    elif head.seq > report.last_seq:
        reason = (
            f"missing: the signed head says the log runs to entry {head.seq}, it ends at "
            f"{report.last_seq} (truncated)"
        )
    elif head.seq and at_head != head.hash:
        where = Problem(where.line, -1, head.seq, "")
        reason = "is not the entry the signed head names (the log was rewritten)"
    elif head.checkpoint > report.last_checkpoint:
        reason = f"missing: the head names checkpoint {head.checkpoint}, the log has none there"
    else:
        return
    report.problem = Problem(where.line, where.offset, where.seq, reason)
