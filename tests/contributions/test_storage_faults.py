"""Evidence when the server's disks fail, injected for real: a tiny tmpfs that fills up, the
same remounted read-only, as the store's directory and as the temporary directory uploads are
spooled to.  The answer is the server's (507 `storage_full`, 503 `storage_unavailable` with
Retry-After), one error line tells the operator, no partial file stays behind, nothing is
written to the database, and the next upload after the disk is fixed succeeds.

Mounting needs root (CAP_SYS_ADMIN); without it these tests are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Message, Scope

from app.contributions.evidence import media
from app.core.errors import StorageFull, StorageUnavailable, storage_failed
from app.core.logging import JsonFormatter
from app.deps import get_storage
from app.integrations.storage import LocalStorage
from tests.contributions.helpers import World, create, written
from tests.contributions.test_attachments import PDF, stored_files, upload
from tests.fixtures.problems import assert_problem

DISK_BYTES = 512 * 1024
NAME = "王小丽的证明.pdf"


def pdf_of(size: int) -> bytes:
    """A PDF of `size` bytes (not re-encoded: what is sent is what is written)."""
    return PDF[:-6] + os.urandom(size - len(PDF)) + PDF[-6:]


@dataclass
class Disk:
    """A tmpfs of DISK_BYTES mounted at `path` for one test."""

    path: Path

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file())

    def fill(self, leave: int) -> None:
        """Take all but about `leave` bytes with a file of its own."""
        stat = os.statvfs(self.path)
        free = stat.f_bavail * stat.f_frsize
        (self.path / "filler").write_bytes(b"\x00" * max(0, free - leave))

    def free(self) -> None:
        (self.path / "filler").unlink()

    def _remount(self, mode: str) -> None:
        subprocess.run(  # noqa: S603
            [_tool("mount"), "-o", f"remount,{mode}", str(self.path)], check=True
        )

    def read_only(self) -> None:
        self._remount("ro")

    def writable(self) -> None:
        self._remount("rw")


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"`{name}` is not installed: a tiny disk cannot be mounted")
    return path


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(  # noqa: S603
        [
            _tool("mount"),
            "-t",
            "tmpfs",
            "-o",
            f"size={DISK_BYTES // 1024}k",
            "tmpfs",
            str(mountpoint),
        ],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "a small full or read-only disk is made with `mount -t tmpfs`, which needs root "
            f"(CAP_SYS_ADMIN): {mounted.stderr.strip()}"
        )
    try:
        yield Disk(mountpoint)
    finally:
        subprocess.run([_tool("umount"), "-l", str(mountpoint)], check=False)  # noqa: S603


@pytest.fixture
def disk_store(app: FastAPI, disk: Disk) -> Path:
    """Evidence is stored on the tiny disk (the `storage_dir` fixture removes the override)."""
    root = disk.path / "uploads"
    app.dependency_overrides[get_storage] = lambda: LocalStorage(root)
    return root


@pytest.fixture
def disk_spool(disk: Disk, monkeypatch: pytest.MonkeyPatch) -> Disk:
    """Uploads are spooled to the tiny disk (the temporary directory of this process)."""
    monkeypatch.setattr(tempfile, "tempdir", str(disk.path))
    return disk


def operator_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def assert_one_operator_line(
    caplog: pytest.LogCaptureFixture, message: str, where: str, code: str, disk: Disk
) -> None:
    """Exactly one line, level error, no traceback, naming the fault, not the person, the
    file or where it lies."""
    (record,) = operator_lines(caplog)
    assert record.levelno == logging.ERROR
    assert record.name == "quyu.storage"
    assert record.getMessage() == message
    assert record.exc_info is None and record.exc_text is None
    assert record.__dict__["where"] == where
    assert record.__dict__["errno"] == code
    line = JsonFormatter().format(record)
    for secret in (NAME, "王小丽", "13912345678", str(disk.path), "quyu-upload-"):
        assert secret not in line, line


class TestFullDisk:
    async def test_a_full_store_is_507_leaves_no_partial_file_and_recovers(
        self,
        client: httpx.AsyncClient,
        world: World,
        disk: Disk,
        disk_store: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        disk.fill(leave=64 * 1024)
        before = await written(sessionmaker)
        data = pdf_of(200 * 1024)
        for _ in range(3):  # each failed upload would eat more of the disk
            caplog.clear()
            with caplog.at_level(logging.INFO):
                r = await upload(
                    client, world.alice.headers, record["id"], data, NAME, "application/pdf"
                )
            assert_problem(r, 507, "storage_full")
            assert disk.files() == [disk.path / "filler"]
            assert_one_operator_line(caplog, "storage full", "store", "ENOSPC", disk)
        assert await written(sessionmaker) == before
        r = await client.get(f"/contributions/{record['id']}", headers=world.alice.headers)
        assert r.json()["attachment_count"] == 0
        # Space freed: the same upload goes through, whole.
        disk.free()
        r = await upload(client, world.alice.headers, record["id"], data, NAME, "application/pdf")
        assert r.status_code == 201, r.text
        (stored,) = disk.files()
        assert stored.read_bytes() == data
        assert stored.is_relative_to(disk_store)

    async def test_a_full_temporary_directory_is_507_not_the_clients_fault(
        self,
        client: httpx.AsyncClient,
        world: World,
        disk_spool: Disk,
        storage_dir: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        disk = disk_spool
        record = await create(client, world.alice, world.tree.r1)
        disk.fill(leave=64 * 1024)
        before = await written(sessionmaker)
        data = pdf_of(200 * 1024)
        with caplog.at_level(logging.INFO):
            r = await upload(
                client, world.alice.headers, record["id"], data, NAME, "application/pdf"
            )
        # Not 422 "send one file": the upload was fine, the server's disk was not.
        assert_problem(r, 507, "storage_full")
        assert disk.files() == [disk.path / "filler"]
        assert stored_files(storage_dir) == []
        assert await written(sessionmaker) == before
        assert_one_operator_line(caplog, "storage full", "upload spool", "ENOSPC", disk)
        disk.free()
        r = await upload(client, world.alice.headers, record["id"], data, NAME, "application/pdf")
        assert r.status_code == 201, r.text
        assert disk.files() == []  # the spooled file went once stored
        (stored,) = stored_files(storage_dir)
        assert stored.read_bytes() == data

    async def test_no_room_for_the_re_encoded_image_is_507(
        self,
        client: httpx.AsyncClient,
        world: World,
        disk_spool: Disk,
        storage_dir: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The upload fits in the temporary directory; its re-encoded image (a JPEG sent at
        quality 5 comes back at 90: twice the bytes) does not."""
        disk = disk_spool
        noise = Image.frombytes("RGB", (800, 800), os.urandom(800 * 800 * 3))
        buffer = io.BytesIO()
        noise.save(buffer, "JPEG", quality=5)
        photo = buffer.getvalue()
        assert 30_000 < len(photo) < 60_000
        record = await create(client, world.alice, world.tree.r1)
        disk.fill(leave=72 * 1024)
        before = await written(sessionmaker)
        with caplog.at_level(logging.INFO):
            r = await upload(client, world.alice.headers, record["id"], photo, "a.jpg")
        assert_problem(r, 507, "storage_full")
        assert_one_operator_line(caplog, "storage full", "upload spool", "ENOSPC", disk)
        assert disk.files() == [disk.path / "filler"]
        assert stored_files(storage_dir) == []
        assert await written(sessionmaker) == before
        disk.free()
        r = await upload(client, world.alice.headers, record["id"], photo, "a.jpg")
        assert r.status_code == 201, r.text
        assert r.json()["size"] > 80_000
        assert disk.files() == []

    async def test_a_form_spooled_by_the_framework_to_a_full_directory_is_507(
        self,
        client: httpx.AsyncClient,
        disk_spool: Disk,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Starlette spools a form's file part past 1 MB to a temporary file; FastAPI calls
        any failure there 400 "error parsing the body"."""
        disk_spool.fill(leave=64 * 1024)
        with caplog.at_level(logging.INFO):
            r = await client.post(
                "/auth/token",
                data={"grant_type": "password", "username": "13912345678", "password": "x"},
                files={"attachment": ("a.bin", b"\x00" * (2 * 1024 * 1024))},
            )
        if r.status_code == 413:
            pytest.skip("a form this large is refused before anything is spooled")
        assert_problem(r, 507, "storage_full")
        assert_one_operator_line(caplog, "storage full", "form spool", "ENOSPC", disk_spool)
        assert disk_spool.files() == [disk_spool.path / "filler"]


class TestReadOnlyDisk:
    async def test_a_read_only_store_is_503_with_retry_after_and_recovers(
        self,
        client: httpx.AsyncClient,
        world: World,
        disk: Disk,
        disk_store: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        (disk_store / "contributions").mkdir(parents=True)
        disk.read_only()
        before = await written(sessionmaker)
        with caplog.at_level(logging.INFO):
            r = await upload(
                client, world.alice.headers, record["id"], PDF, NAME, "application/pdf"
            )
        assert_problem(r, 503, "storage_unavailable")
        assert int(r.headers["retry-after"]) > 0
        assert_one_operator_line(caplog, "storage unavailable", "store", "EROFS", disk)
        assert disk.files() == []
        assert await written(sessionmaker) == before
        disk.writable()
        r = await upload(client, world.alice.headers, record["id"], PDF, NAME, "application/pdf")
        assert r.status_code == 201, r.text
        (stored,) = disk.files()
        assert stored.read_bytes() == PDF

    async def test_a_read_only_temporary_directory_is_503(
        self,
        client: httpx.AsyncClient,
        world: World,
        disk_spool: Disk,
        storage_dir: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        disk_spool.read_only()
        before = await written(sessionmaker)
        with caplog.at_level(logging.INFO):
            r = await upload(
                client, world.alice.headers, record["id"], PDF, NAME, "application/pdf"
            )
        assert_problem(r, 503, "storage_unavailable")
        assert "retry-after" in r.headers
        assert_one_operator_line(caplog, "storage unavailable", "upload spool", "EROFS", disk_spool)
        assert stored_files(storage_dir) == []
        assert await written(sessionmaker) == before
        disk_spool.writable()
        r = await upload(client, world.alice.headers, record["id"], PDF, NAME, "application/pdf")
        assert r.status_code == 201, r.text
        assert disk_spool.files() == []


async def raw_get(app: FastAPI, path: str, headers: dict[str, str]) -> list[Message]:
    """The ASGI messages of a GET, whatever the app does after its answer started (httpx's
    transport insists on a finished answer)."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    sent: list[Message] = []
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


class TestElsewhere:
    async def test_a_disk_fault_no_code_expected_is_one_line_not_a_traceback(
        self,
        app: FastAPI,
        world: World,
        disk_spool: Disk,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A spreadsheet export builds its file in the temporary directory, after its answer
        has started: a read-only directory cannot change the answer any more, but the
        operator hears of it as a storage fault, in one line."""
        disk_spool.read_only()
        with caplog.at_level(logging.INFO):
            sent = await raw_get(
                app, f"/api/v1/orgs/{world.tree.r1.id}/exports/members", world.tree.h_r1
            )
        assert sent[0]["type"] == "http.response.start"
        assert_one_operator_line(caplog, "storage unavailable", "request", "EROFS", disk_spool)
        # The request is counted and logged as failed, whatever its first line said.
        (access,) = [r for r in caplog.records if r.name == "quyu.access"]
        assert access.__dict__["status"] == 503


class TestCancelled:
    """A request cancelled while its file is being written (the server shutting down) leaves
    no file behind either.  The writes block on a FIFO, so that the cancellation lands in
    the middle of the copy, not before or after it."""

    async def test_store_copy_cancelled_midway(self, tmp_path: Path) -> None:
        root = tmp_path / "uploads"
        fifo = tmp_path / "source"
        os.mkfifo(fifo)
        store = LocalStorage(root)
        key = f"contributions/{uuid.uuid4().hex}/{uuid.uuid4().hex}.pdf"
        task = asyncio.create_task(store.put_file(key, fifo))
        writer = await asyncio.to_thread(open, fifo, "wb")
        try:
            await asyncio.to_thread(writer.write, b"\x01" * (1024 * 1024 + 1))
            await asyncio.to_thread(writer.flush)
            await _until(lambda: any(p.suffix == ".part" for p in stored_files(root)))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The copy's thread goes on until its next chunk, then gives up (and closes the
            # pipe: the writer hears of it).
            with contextlib.suppress(BrokenPipeError):
                await asyncio.to_thread(writer.write, b"\x02" * (2 * 1024 * 1024))
        finally:
            with contextlib.suppress(BrokenPipeError):
                await asyncio.to_thread(writer.close)
        await _until(lambda: stored_files(root) == [])

    async def test_spooling_cancelled_midway(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        spool = tmp_path / "spool"
        spool.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(spool))
        arrived = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield (
                b"--xyz\r\n"
                b'Content-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n'
                + PDF
                + b"\x00" * 100_000
            )
            arrived.set()
            await asyncio.Event().wait()  # a phone on a slow network
            yield b""

        task = asyncio.create_task(
            media.receive_upload("multipart/form-data; boundary=xyz", None, body())
        )
        await arrived.wait()
        await _until(lambda: any(p.stat().st_size > 0 for p in spool.iterdir()))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until(lambda: list(spool.iterdir()) == [])


async def _until(condition: object, seconds: float = 5.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


class TestWhichFault:
    """Errors that cannot be made for real here (a failing device, a quota) are classified
    by their errno like the ones above."""

    @pytest.mark.parametrize(
        ("number", "kind"),
        [
            (errno.ENOSPC, StorageFull),
            (errno.EDQUOT, StorageFull),
            (errno.EFBIG, StorageFull),
            (errno.EROFS, StorageUnavailable),
            (errno.EIO, StorageUnavailable),
            (errno.EACCES, StorageUnavailable),
        ],
    )
    def test_errno(self, number: int, kind: type[Exception]) -> None:
        error = storage_failed(OSError(number, os.strerror(number)), "store")
        assert type(error) is kind
        assert error.status == (507 if kind is StorageFull else 503)
        if kind is StorageUnavailable:
            assert error.headers["Retry-After"]
