"""The audit log's signing key: Ed25519, made on first use in the confdir (0600), its
public half beside it (`modgate audit pubkey`) for whoever verifies the log elsewhere."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modgate.audit import AuditError

KEY, PUBLIC = "audit-signing.key", "audit-signing.pub"


def signing_key(confdir: Path) -> Ed25519PrivateKey:
    """This modgate's audit key, made now if there is none. Several workers may start at
    once: the key is written to a private temporary file and linked into place, so the
    first one made is the one every process uses, and none reads half a key."""
    path = confdir / KEY
    if not path.exists():
        confdir.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
        tmp = path.with_name(f".{KEY}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process was first: its key stands
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise AuditError(f"{path}: cannot read the audit signing key: {e}") from e
    if not isinstance(loaded, Ed25519PrivateKey):
        raise AuditError(f"{path}: not an Ed25519 key")
    if path.stat().st_mode & 0o077:
        raise AuditError(f"{path}: readable by others; chmod 600 {path}")
    public = confdir / PUBLIC
    pem = public_pem(loaded.public_key())
    with contextlib.suppress(OSError):
        if not public.is_file() or public.read_bytes() != pem:
            public.write_bytes(pem)
    return loaded


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key from a PEM file (audit-signing.pub), or the public half of a private
    key file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AuditError(f"{path}: cannot read the public key: {e.strerror or e}") from e
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
            raise ValueError("not Ed25519")
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise AuditError(f"{path}: not a key modgate can read: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{path}: not an Ed25519 public key ({PUBLIC})")
    return key
