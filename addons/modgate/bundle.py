"""Air-gap bundles: carry a cache's artifacts, and what proves them, across a gap.

A bundle is a tar file:

    proxy/<escaped module>/@v/<version>.info|.mod|.zip, proxy/<module>/@v/list
                              a GOPROXY tree ("GOPROXY protocol") of the artifacts
    proxy/sumdb/<name>/...    the checksum database's lookups for them and every tile
                              and tree head the cache holds ("Checksum database")
    manifest.json             each file's size and SHA-256, the versions and their h1
                              hashes, the database's name, when and what was exported
    manifest.sig              Ed25519 over manifest.json, by the exporting modgate's key

Import trusts nothing in the bundle it has not checked: the manifest's signature against
a key the importer names (`--trust`), every file against the manifest, then every
artifact the way modgate checks what it fetches. It starts a modgate of its own on an
empty staging cache, whose upstream is the bundle and whose checksum database is the
importer's own (its key, not the bundle's); private modules are pinned to the h1 hashes
of the signed manifest. It asks that modgate for every version (prefetch.py). Only when
all of it passed are the staged entries copied into the target cache: a bundle with one
altered byte is refused whole, and the target is left as it was.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modgate.cacheadmin import Item
from modgate.errors import ModgateError
from modgate.store import DiskStore

MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
KEY, PUBLIC = "bundle-signing.key", "bundle-signing.pub"
FORMAT = 1
PUBLIC_KINDS = ("info", "mod", "zip", "list")


class BundleError(ModgateError):
    """A bundle that cannot be trusted or read; nothing was imported."""


# --- the signing key ---------------------------------------------------------------------


def signing_key(confdir: Path) -> Ed25519PrivateKey:
    """This modgate's bundle key (made on first use; its public half beside it)."""
    path = confdir / KEY
    if path.is_file():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ModgateError(f"{path}: not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    confdir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    (confdir / PUBLIC).write_bytes(public_pem(key))
    return key


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ModgateError(f"--trust {path}: not a public key modgate can read: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ModgateError(f"--trust {path}: not an Ed25519 public key (bundle-signing.pub)")
    return key


# --- export ------------------------------------------------------------------------------


@dataclass
class Manifest:
    created: float
    database: str  # the checksum database's name, "" for none
    files: dict[str, dict[str, object]] = field(default_factory=dict)  # name: size, sha256
    versions: dict[str, dict[str, str]] = field(default_factory=dict)  # m@v: mod/zip h1, verdict

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "created": self.created,
                "database": self.database,
                "files": self.files,
                "versions": self.versions,
            },
            indent=1,
            sort_keys=True,
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> Manifest:
        try:
            obj = json.loads(data)
            if obj.get("format") != FORMAT:
                raise BundleError(
                    f"bundle format {obj.get('format')!r}: this modgate reads {FORMAT}"
                )
            return cls(
                float(obj["created"]),
                str(obj["database"]),
                dict(obj["files"]),
                dict(obj["versions"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BundleError(f"{MANIFEST}: not a manifest modgate wrote: {e}") from e


def select(
    items: Sequence[Item], chosen: Callable[[Item], bool], previous: Manifest | None, database: str
) -> list[Item]:
    """The module answers `chosen` keeps (200s of the public kinds) and, for the versions
    among them, the database's lookups; every tile and tree head the cache holds."""
    artifacts = [i for i in items if i.kind in PUBLIC_KINDS and i.status == 200 and chosen(i)]
    versions = {(i.module, i.version) for i in artifacts if i.version}
    proofs = [
        i
        for i in items
        if i.sumdb
        and i.status == 200
        and i.database == database
        and (i.kind != "sumdb-lookup" or (i.module, i.version) in versions)
    ]
    out = artifacts + proofs
    if previous is not None:  # incremental: what the last bundle did not carry
        out = [i for i in out if bundle_name(i) not in previous.files or i.kind == "sumdb-latest"]
    return out


def bundle_name(i: Item) -> str:
    return "proxy/" + i.key.rsplit(" ", 1)[-1]


def export(
    store: DiskStore,
    chosen: Sequence[Item],
    out: Path,
    key: Ed25519PrivateKey,
    database: str,
    progress: Callable[[int], None] = lambda n: None,
) -> Manifest:
    manifest = Manifest(created=time.time(), database=database)
    entries = {e.key: e for e in store.entries()}
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w") as tar:
        for i in chosen:
            entry = entries.get(i.key)
            body = store.raw(entry) if entry is not None else None
            if body is None:
                raise ModgateError(f"{i.key}: unreadable in the cache; `modgate cache verify`")
            try:
                data = body.read()
            finally:
                body.close()
            name = bundle_name(i)
            _add(tar, name, data)
            manifest.files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            if i.kind in ("mod", "zip") and entry is not None and entry.h1:
                v = manifest.versions.setdefault(f"{i.module}@{i.version}", {})
                v[i.kind], v["verdict"], v["source"] = entry.h1, entry.verdict, entry.checked_by
            progress(len(data))
        text = manifest.dumps()
        _add(tar, MANIFEST, text)
        _add(tar, SIGNATURE, base64.b64encode(key.sign(text)) + b"\n")
    tmp.replace(out)
    return manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


# --- import ------------------------------------------------------------------------------


def unpack(bundle: Path, trusted: Ed25519PublicKey, dest: Path) -> Manifest:
    """Check the signature and every file, and write the proxy tree under `dest`.
    Raises BundleError with the first reason not to trust it."""
    try:
        tar = tarfile.open(bundle, "r")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as e:
        raise BundleError(f"{bundle}: not a bundle modgate can read: {e}") from e
    with tar:
        try:
            members = {m.name: m for m in tar.getmembers()}
            text, signature = _read(tar, members, MANIFEST), _read(tar, members, SIGNATURE)
        except (OSError, tarfile.TarError, EOFError) as e:
            raise BundleError(f"{bundle}: cut short or damaged: {e}") from e
        try:
            trusted.verify(base64.b64decode(signature.strip(), validate=True), text)
        except (InvalidSignature, ValueError) as e:
            raise BundleError(
                f"{bundle}: the manifest's signature does not match the trusted "
                "key (a different exporter, or an altered manifest)"
            ) from e
        manifest = Manifest.loads(text)
        extra = set(members) - set(manifest.files) - {MANIFEST, SIGNATURE}
        if extra:
            raise BundleError(
                f"{bundle}: holds files its manifest does not list: {sorted(extra)[:3]}"
            )
        for name, meta in manifest.files.items():
            if not name.startswith("proxy/") or ".." in name.split("/") or "\\" in name:
                raise BundleError(f"{bundle}: a file name it must not use: {name!r}")
            try:
                data = _read(tar, members, name)
            except (OSError, tarfile.TarError, EOFError) as e:
                raise BundleError(f"{bundle}: {name}: cut short or damaged: {e}") from e
            if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
                raise BundleError(
                    f"{bundle}: {name}: its bytes are not the ones the manifest "
                    "signed (altered or damaged in transit)"
                )
            path = dest / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return manifest


def _read(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
    member = members.get(name)
    if member is None or not member.isfile():
        raise BundleError(f"{name}: missing from the bundle")
    f = tar.extractfile(member)
    if f is None:
        raise BundleError(f"{name}: unreadable in the bundle")
    data = f.read()
    if len(data) != member.size:
        raise EOFError(f"{name}: {len(data)} of {member.size} bytes")
    return data


def pins(manifest: Manifest) -> list[str]:
    """go.sum lines for the versions no checksum database vouched for when they were
    exported (private modules, pinned ones): the signed manifest's hashes are what they
    are held to. The others are checked against the importer's own database."""
    out = []
    for name, hashes in sorted(manifest.versions.items()):
        by_database = hashes.get("verdict") == "verified" and not hashes.get(
            "source", ""
        ).startswith(("pin", "first seen", "go.sum"))
        if by_database:
            continue
        module, _, version = name.partition("@")
        if "zip" in hashes:
            out.append(f"{module} {version} {hashes['zip']}")
        if "mod" in hashes:
            out.append(f"{module} {version}/go.mod {hashes['mod']}")
    return out


def copy_entries(staging: DiskStore, target: DiskStore) -> int:
    """Every entry of `staging` into `target` (the import's last step)."""
    n = 0
    for entry in staging.entries():
        if not entry.key.startswith("v2 "):
            continue  # the staging modgate's own chain's answers (lists): not the target's
        body = staging.raw(entry)
        if body is None:
            raise ModgateError(f"staged {entry.key} became unreadable; nothing more copied")
        try:
            data = body.read()
        finally:
            body.close()
        spool = target.directory.parent / f".import-{n}"
        spool.write_bytes(data)
        try:
            target.put(entry, spool)
        finally:
            spool.unlink(missing_ok=True)
        n += 1
    return n
