"""Object storage: where uploaded files (contribution evidence) live, behind a small
interface with two implementations.

`LocalStorage` keeps files under one directory (`QUYU_STORAGE_DIR`, default ./var/uploads), the
default.  `S3Storage` keeps them in a bucket of an S3-compatible store (AWS S3, MinIO, Aliyun
OSS, …) with `QUYU_STORAGE_BACKEND=s3` and the `QUYU_S3_*` settings.  `storage_for(settings)`
makes the one the settings choose; the application makes it once, at start-up, and hands it to
the routes that need it (`app.deps.AppStorage`).

A store that cannot take a file is the server's problem, never the client's: `put_file`
raises 507 `storage_full` (a full disk or quota, an S3 store out of space) or 503
`storage_unavailable` with Retry-After (read-only, I/O errors, permissions, an S3 store that
does not answer or refuses our credentials), logged as one error line for the operator.  It
leaves no partial file behind, whichever way it fails, cancellation included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from app.config import ConfigError, Settings
from app.core.errors import AppError, storage_failed

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

CHUNK = 64 * 1024
_COPY_CHUNK = 1024 * 1024
_KEY = re.compile(r"^[a-z0-9]+(?:/[a-z0-9][a-z0-9._-]*)+$")
# What S3-compatible stores answer for an absent object (HEAD has no body, hence "404").
_MISSING = {"NoSuchKey", "404", "NotFound"}


class Storage(Protocol):
    async def put_file(self, key: str, source: Path) -> None:
        """Store the file at `source` (a temporary file the caller owns) under `key`: all of
        it or nothing.  507 `storage_full` / 503 `storage_unavailable` when the store cannot
        take it."""

    def open(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes in chunks; FileNotFoundError when absent."""

    async def delete(self, key: str) -> None:
        """Remove; absent keys are ignored."""

    async def aclose(self) -> None:
        """Release what the store holds open (connections); for the app's shutdown."""


def _checked(key: str) -> str:
    if not _KEY.match(key) or ".." in key:
        raise ValueError("bad storage key")
    return key


class _Abandoned(Exception):
    """The request that wanted the copy is gone."""


class _Copy:
    """One file copied into a local store, in a thread, that its request may abandon."""

    def __init__(self, target: Path, partial: Path) -> None:
        self.target = target
        self.partial = partial
        self._lock = threading.Lock()
        self._abandoned = False
        self._done = False

    def run(self, source: Path) -> None:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as reader, self.partial.open("xb") as writer:
                while chunk := reader.read(_COPY_CHUNK):
                    if self._abandoned:
                        raise _Abandoned
                    writer.write(chunk)
                writer.flush()
                os.fsync(writer.fileno())
            with self._lock:
                if self._abandoned:
                    raise _Abandoned
                os.replace(self.partial, self.target)
                self._done = True
        except BaseException:
            with contextlib.suppress(OSError):
                self.partial.unlink(missing_ok=True)
            raise

    def abandon(self) -> None:
        """Called on the event loop when the request is cancelled: a copy still running stops
        at its next chunk and removes its partial file; a finished one is taken back (one
        unlink, on the loop: the thread may be gone already)."""
        with self._lock:
            self._abandoned = True
            done = self._done
        if done:
            with contextlib.suppress(OSError):
                self.target.unlink(missing_ok=True)


class LocalStorage:
    """Files under one directory, key = relative path; blocking I/O runs in threads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / _checked(key)

    async def put_file(self, key: str, source: Path) -> None:
        """Copy to a partial file next to the target, flush it to the disk, then rename it
        into place: readers see the whole file or none.  Whatever fails (a full or read-only
        disk, an I/O error, the request cancelled while the copy runs in its thread), the
        partial file is removed, and so is a file that was put in place for a request that
        was cancelled meanwhile."""
        target = self._path(key)
        copy = _Copy(target, target.with_name(f"{target.name}.{uuid.uuid4().hex}.part"))
        try:
            await asyncio.to_thread(copy.run, source)
        except OSError as exc:
            raise storage_failed(exc, "store") from exc
        except asyncio.CancelledError:
            copy.abandon()
            raise

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def aclose(self) -> None:
        return None


class S3Storage:
    """Objects in one bucket of an S3-compatible store; object key = prefix + "/" + key.

    One aiobotocore client, made on first use and kept, so that its connection pool is
    reused; `aclose()` releases it.  Payload checksums are sent only where an operation
    requires them: Aliyun OSS and older MinIO reject the aws-chunked uploads that botocore
    otherwise sends by default.  The SHA-256 of each file is kept in the database anyway.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        addressing_style: Literal["auto", "virtual", "path"] = "auto",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._config = AioConfig(
            # botocore's model files are read in a thread, not on the event loop.
            warm_up_loader_caches=True,
            s3={"addressing_style": addressing_style},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard"},
        )
        self._session = get_session()
        self._client: S3Client | None = None
        self._exit = AsyncExitStack()
        self._lock = asyncio.Lock()

    async def _s3(self) -> S3Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._exit.enter_async_context(
                        self._session.create_client(
                            "s3",
                            endpoint_url=self._endpoint_url,
                            region_name=self._region,
                            aws_access_key_id=self._access_key_id,
                            aws_secret_access_key=self._secret_access_key,
                            config=self._config,
                        )
                    )
        return self._client

    def _name(self, key: str) -> str:
        _checked(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put_file(self, key: str, source: Path) -> None:
        """One PUT: the store keeps the whole object or none."""
        name = self._name(key)
        try:
            client = await self._s3()
            handle = await asyncio.to_thread(source.open, "rb")
            try:
                # A file body is sent in chunks read off the event loop (aiohttp), not whole.
                size = os.fstat(handle.fileno()).st_size
                await client.put_object(
                    Bucket=self.bucket, Key=name, Body=handle, ContentLength=size
                )
            finally:
                await asyncio.to_thread(handle.close)
        except ClientError as exc:
            raise _refused(exc) from exc
        except (BotoCoreError, OSError) as exc:
            # Not reachable, timed out, the connection dropped (aiohttp's errors are OSErrors).
            raise storage_failed(exc, "s3", full=False) from exc

    async def open(self, key: str) -> AsyncIterator[bytes]:
        name = self._name(key)
        client = await self._s3()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(key) from error
            raise
        async with response["Body"] as body:
            async for chunk in body.iter_chunks(CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        # S3 answers 204 for an absent key too.
        client = await self._s3()
        await client.delete_object(Bucket=self.bucket, Key=self._name(key))

    async def aclose(self) -> None:
        async with self._lock:
            self._client = None
            await self._exit.aclose()


# What S3-compatible stores answer when they are out of space or over a quota.
_S3_FULL = {"XMinioStorageFull", "InsufficientStorage", "QuotaExceeded", "StorageFull"}


def _refused(exc: ClientError) -> AppError:
    """An S3 store refused the PUT: its error code (never the message, which may quote the
    key) goes to the log; a full store is 507, anything else 503 (throttled, down, or
    refusing our credentials or bucket: an operator's matter either way)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    full = code in _S3_FULL or status == 507
    return storage_failed(exc, "s3", full=full, reason=f"{status} {code}".strip())


def storage_for(settings: Settings) -> Storage:
    """The store the settings choose (ConfigError for s3 without a bucket)."""
    if settings.storage_backend != "s3":
        return LocalStorage(Path(settings.storage_dir))
    if not settings.s3_bucket:
        raise ConfigError("QUYU_S3_BUCKET is required with QUYU_STORAGE_BACKEND=s3")
    secret = settings.s3_secret_access_key
    return S3Storage(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
        prefix=settings.s3_prefix,
        addressing_style=settings.s3_addressing_style,
    )
