"""Object storage: where uploaded files (contribution evidence) live, behind a small
interface with two implementations.

`LocalStorage` keeps files under one directory (`QUYU_STORAGE_DIR`, default ./var/uploads), the
default.  `S3Storage` keeps them in a bucket of an S3-compatible store (AWS S3, MinIO, Aliyun
OSS, …) with `QUYU_STORAGE_BACKEND=s3` and the `QUYU_S3_*` settings.  `storage_for(settings)`
makes the one the settings choose; the application makes it once, at start-up, and hands it to
the routes that need it (`app.deps.AppStorage`).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from app.config import ConfigError, Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

CHUNK = 64 * 1024
_KEY = re.compile(r"^[a-z0-9]+(?:/[a-z0-9][a-z0-9._-]*)+$")
# What S3-compatible stores answer for an absent object (HEAD has no body, hence "404").
_MISSING = {"NoSuchKey", "404", "NotFound"}


class Storage(Protocol):
    async def put_file(self, key: str, source: Path) -> None:
        """Store the file at `source` (a temporary file the caller owns) under `key`."""

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


class LocalStorage:
    """Files under one directory, key = relative path; blocking I/O runs in threads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / _checked(key)

    async def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)

        def _put() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(source, partial)
            os.replace(partial, target)

        await asyncio.to_thread(_put)

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
        name = self._name(key)
        client = await self._s3()
        handle = await asyncio.to_thread(source.open, "rb")
        try:
            # A file body is sent in chunks read off the event loop (aiohttp), not whole.
            size = os.fstat(handle.fileno()).st_size
            await client.put_object(Bucket=self.bucket, Key=name, Body=handle, ContentLength=size)
        finally:
            await asyncio.to_thread(handle.close)

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
