"""Where evidence files live: a small interface and its local-directory implementation.

An S3-compatible implementation would satisfy the same `Storage` protocol; it is not written
yet (see the module's closing note in the contributions issue): the local directory
(`QUYU_STORAGE_DIR`, default ./var/uploads) is the only backend today.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from app.config import get_settings

CHUNK = 64 * 1024
_KEY = re.compile(r"^[a-z0-9]+(?:/[a-z0-9][a-z0-9._-]*)+$")


class Storage(Protocol):
    async def put_file(self, key: str, source: Path) -> None:
        """Store the file at `source` (a temporary file the caller owns) under `key`."""

    def open(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes in chunks; FileNotFoundError when absent."""

    async def delete(self, key: str) -> None:
        """Remove; absent keys are ignored."""


class LocalStorage:
    """Files under one directory, key = relative path; blocking I/O runs in threads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key:
            raise ValueError("bad storage key")
        return self.root / key

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


@lru_cache
def _local(root: str) -> LocalStorage:
    return LocalStorage(Path(root))


def get_storage() -> Storage:
    return _local(str(get_settings().storage_dir))
