"""The shared tier: answers kept in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW,
SeaweedFS, GCS's S3 interface) that every replica reads and writes, behind each
replica's bounded local DiskStore (store.py). The gateway asks it after a local miss,
holding the key's cluster lock, and publishes to it what it fetched and verified.

    get(key)  -> (Entry, spooled file) | None  the body streamed to a spool file while
                                              its SHA-256 is computed; a body that does
                                              not match its entry is refused (None)
    put(entry, file)                           streamed from the file: one PUT, or a
                                              multipart upload of `part_size` parts, so
                                              at most one part is in memory

One object per answer, named by the SHA-256 of its cache key (hostile module paths make
no object names); the whole Entry (hashes, verdict, expiry) rides along as user
metadata, and the key is checked against it on the way back. An unreachable or failing
bucket raises ObjectStoreError; the gateway then serves from its local tier and the
upstream, and says so.

Credentials never appear in rules.yaml, logs or traces: they come from
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS shared-credentials file, and are held
in a `Credentials` whose repr hides the secret.
"""

from __future__ import annotations

import asyncio
import base64
import configparser
import hashlib
import json
import logging
import os
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modgate.config import S3Settings
from modgate.errors import ConfigError, ObjectStoreError
from modgate.store import Entry, entry_from_json

log = logging.getLogger("modgate")

CHUNK = 1 << 20  # bytes read from a download per step
META = "modgate-entry"  # user metadata: the Entry, JSON, base64url (S3 metadata is ASCII)
RETRY_AFTER = 5.0  # seconds a bucket that failed is left alone before it is asked again


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    source: str = ""  # where they came from, for messages: never the values

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key='***', from {self.source})"


def credentials(settings: S3Settings, environ: dict[str, str] | None = None) -> Credentials:
    """The keys for `settings`: its `credentials_file` (profile `settings.profile`) if it
    names one, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY. Raises ConfigError naming
    where they were looked for, never what was found."""
    env = os.environ if environ is None else environ
    path = settings.credentials_file
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(path.read_text())
        except (OSError, UnicodeDecodeError, configparser.Error) as e:
            raise ConfigError(f"store.s3.credentials_file {path}: cannot read it: {e}") from None
        if not parser.has_section(settings.profile):
            raise ConfigError(f"store.s3.credentials_file {path}: no [{settings.profile}] profile")
        section = parser[settings.profile]
        key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
        if not key or not secret:
            raise ConfigError(
                f"store.s3.credentials_file {path}: [{settings.profile}] needs "
                "aws_access_key_id and aws_secret_access_key"
            )
        return Credentials(key.strip(), secret.strip(), str(path))
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise ConfigError(
            "store.s3: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
            "modgate's environment, or name a credentials_file in rules.yaml"
        )
    return Credentials(key, secret, "the environment")


def object_name(prefix: str, key: str) -> str:
    return prefix + hashlib.sha256(key.encode()).hexdigest()


class S3Tier:
    """A Tier (store.py) in an S3 bucket, through aiobotocore on the running event loop."""

    def __init__(self, settings: S3Settings, creds: Credentials) -> None:
        self.settings, self._creds = settings, creds
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._opening: asyncio.Lock | None = None
        self._failed_until = 0.0
        self.last_error = ""  # the latest failure, "" once it worked again (status())
        self.gets = self.puts = self.refused = 0

    def __repr__(self) -> str:
        return f"S3Tier({self.where})"

    @property
    def where(self) -> str:
        return f"{self.settings.endpoint}/{self.settings.bucket}/{self.settings.prefix}"

    async def open(self) -> None:
        """Make the client and ask for the bucket now, at start, rather than at the first
        miss (botocore's import, its S3 model and endpoint rules: ~0.6 s here). A bucket
        that cannot be used is logged now; requests meanwhile go on without it."""
        try:
            s3 = await self._s3()
            await s3.head_bucket(Bucket=self.settings.bucket)
        except ObjectStoreError:
            return
        except Exception as e:
            self._failed("head bucket", e)
            return
        self._worked()

    async def _s3(self) -> Any:
        if time.monotonic() < self._failed_until:
            raise ObjectStoreError(f"object store {self.where}: {self.last_error} (retrying soon)")
        if self._client is not None:
            return self._client
        self._opening = self._opening or asyncio.Lock()
        async with self._opening:
            if self._client is None:
                from aiobotocore.session import get_session
                from botocore.config import Config

                stack = AsyncExitStack()
                config = Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=min(self.settings.timeout, 3.0),
                    read_timeout=self.settings.timeout,
                )
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=self.settings.endpoint,
                        region_name=self.settings.region,
                        aws_access_key_id=self._creds.access_key,
                        aws_secret_access_key=self._creds.secret_key,
                        config=config,
                    )  # fmt: skip
                )
                self._stack = stack
        return self._client

    def _failed(self, what: str, e: BaseException) -> ObjectStoreError:
        """An ObjectStoreError naming the bucket and the failure (botocore's messages
        name the operation and the server's code, never the credentials)."""
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        if not self.last_error:
            log.warning("modgate: object store %s failed (%s): %s", self.where, what, reason)
        self.last_error = reason
        self._failed_until = time.monotonic() + RETRY_AFTER
        return ObjectStoreError(f"object store {self.where}: {what}: {reason}")

    def _worked(self) -> None:
        if self.last_error:
            log.warning("modgate: object store %s is reachable again", self.where)
        self.last_error = ""

    async def get(self, key: str, spool: Path) -> tuple[Entry, Path] | None:
        """The stored answer for `key` in a new file in `spool` (the caller removes it), or
        None when there is none, or what is there does not match its own entry."""
        s3 = await self._s3()
        name = object_name(self.settings.prefix, key)
        try:
            got = await s3.get_object(Bucket=self.settings.bucket, Key=name)
        except Exception as e:
            if _not_found(e):
                self._worked()
                return None
            raise self._failed(f"get {key!r}", e) from e
        entry = _entry(got.get("Metadata", {}))
        fd, tmp = tempfile.mkstemp(dir=spool, prefix="s3-")
        path, h, size = Path(tmp), hashlib.sha256(), 0
        try:
            async with got["Body"] as body:
                with os.fdopen(fd, "wb") as out:
                    async for chunk in body.iter_chunks(CHUNK):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
        except Exception as e:
            path.unlink(missing_ok=True)
            raise self._failed(f"get {key!r}", e) from e
        self._worked()
        self.gets += 1
        if entry is None or entry.key != key or entry.size != size or entry.sha256 != h.hexdigest():
            path.unlink(missing_ok=True)
            self.refused += 1
            log.error(
                "modgate: object store %s: %s (%s) does not match its own entry (damaged or "
                "tampered with): not served; it is fetched again and replaced",
                self.where, name, key,
            )  # fmt: skip
            return None
        return entry, path

    async def put(self, entry: Entry, body: Path) -> None:
        """Publish `entry` with the body in `body`: one PUT up to `part_size`, else a
        multipart upload read one part at a time (aborted if any part fails)."""
        s3 = await self._s3()
        name = object_name(self.settings.prefix, entry.key)
        meta = {META: base64.urlsafe_b64encode(json.dumps(asdict(entry)).encode()).decode()}
        bucket, part_size = self.settings.bucket, self.settings.part_size
        try:
            if entry.size <= part_size:
                await s3.put_object(
                    Bucket=bucket, Key=name, Body=body.read_bytes(), Metadata=meta,
                    ContentType=entry.content_type,
                )  # fmt: skip
            else:
                await self._multipart(s3, name, meta, entry, body)
        except ObjectStoreError:
            raise
        except Exception as e:
            raise self._failed(f"put {entry.key!r}", e) from e
        self._worked()
        self.puts += 1

    async def _multipart(
        self, s3: Any, name: str, meta: dict[str, str], entry: Entry, body: Path
    ) -> None:
        bucket = self.settings.bucket
        up = await s3.create_multipart_upload(
            Bucket=bucket, Key=name, Metadata=meta, ContentType=entry.content_type
        )
        parts = []
        try:
            with body.open("rb") as f:
                number = 1
                while chunk := f.read(self.settings.part_size):
                    done = await s3.upload_part(
                        Bucket=bucket, Key=name, PartNumber=number, UploadId=up["UploadId"],
                        Body=chunk,
                    )  # fmt: skip
                    parts.append({"ETag": done["ETag"], "PartNumber": number})
                    number += 1
            await s3.complete_multipart_upload(
                Bucket=bucket, Key=name, UploadId=up["UploadId"],
                MultipartUpload={"Parts": parts},
            )  # fmt: skip
        except BaseException:
            try:  # nothing partial stays behind (a lifecycle rule mops up what this misses)
                await asyncio.shield(
                    s3.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=up["UploadId"])
                )
            except Exception as e:
                log.warning("modgate: object store %s: abort of %s failed: %s", self.where, name, e)
            raise

    def status(self) -> str:
        """ "ok", or why the bucket is not usable now (for /readyz)."""
        return f"degraded: {self.last_error}" if self.last_error else "ok"

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def _entry(metadata: dict[str, str]) -> Entry | None:
    try:
        text = base64.urlsafe_b64decode(metadata.get(META, "")).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return entry_from_json(text)


def _not_found(e: Exception) -> bool:
    response = getattr(e, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("NoSuchKey", "404", "NotFound")
