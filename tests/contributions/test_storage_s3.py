"""Evidence in an S3-compatible store: `S3Storage` against moto's S3 server on a free local
port, the API storing and serving through it when the settings choose it, a store that is
full, refuses or does not answer, and production refusing the S3 backend without a
bucket."""

from __future__ import annotations

import base64
import http.server
import logging
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from fastapi import FastAPI
from moto.server import ThreadedMotoServer
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import ConfigError, Settings, get_settings
from app.deps import get_storage
from app.integrations.storage import CHUNK, S3Storage, storage_for
from tests.contributions.helpers import World, create, written
from tests.contributions.test_attachments import PDF, upload
from tests.fixtures.problems import assert_problem
from tests.fixtures.processes import free_port

# Under pytest-xdist (--dist loadgroup) on one worker, so that the S3 stand-in starts once.
pytestmark = pytest.mark.xdist_group("s3")

BUCKET = "quyu-evidence"
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
async def bucket(s3_endpoint: str) -> str:
    async with get_session().create_client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        await client.create_bucket(Bucket=BUCKET)
    return BUCKET


def make_store(endpoint: str, bucket: str, prefix: str = "") -> S3Storage:
    return S3Storage(
        bucket,
        endpoint_url=endpoint,
        prefix=prefix,
        addressing_style="path",
        **CREDENTIALS,
    )


@pytest.fixture
async def store(s3_endpoint: str, bucket: str) -> AsyncIterator[S3Storage]:
    s3 = make_store(s3_endpoint, bucket, prefix=f"run-{uuid.uuid4().hex}")
    yield s3
    await s3.aclose()


async def read_all(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def object_keys(store: S3Storage) -> list[str]:
    client = await store._s3()
    listing = await client.list_objects_v2(Bucket=store.bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


def key() -> str:
    return f"contributions/{uuid.uuid4().hex}/{uuid.uuid4().hex}.pdf"


class TestS3Storage:
    async def test_round_trip_in_chunks(self, store: S3Storage, tmp_path: Path) -> None:
        data = secrets.token_bytes(3 * CHUNK + 123)
        source = tmp_path / "upload"
        source.write_bytes(data)
        k = key()
        await store.put_file(k, source)
        chunks = await read_all(store.open(k))
        assert len(chunks) > 1
        assert all(len(chunk) <= CHUNK for chunk in chunks)
        assert b"".join(chunks) == data
        assert source.read_bytes() == data  # the caller's file is left alone

    async def test_put_replaces(self, store: S3Storage, tmp_path: Path) -> None:
        source = tmp_path / "upload"
        k = key()
        for content in (b"first", b"second"):
            source.write_bytes(content)
            await store.put_file(k, source)
        assert b"".join(await read_all(store.open(k))) == b"second"

    async def test_open_missing(self, store: S3Storage) -> None:
        with pytest.raises(FileNotFoundError):
            await read_all(store.open(key()))

    async def test_delete_idempotent(self, store: S3Storage, tmp_path: Path) -> None:
        source = tmp_path / "upload"
        source.write_bytes(b"%PDF-1.4\n%%EOF\n")
        k = key()
        await store.put_file(k, source)
        await store.delete(k)
        with pytest.raises(FileNotFoundError):
            await read_all(store.open(k))
        await store.delete(k)
        await store.delete(key())

    async def test_prefix(
        self, store: S3Storage, s3_endpoint: str, bucket: str, tmp_path: Path
    ) -> None:
        source = tmp_path / "upload"
        source.write_bytes(b"evidence")
        k = key()
        await store.put_file(k, source)
        assert f"{store.prefix}/{k}" in await object_keys(store)
        assert k not in await object_keys(store)
        # Another prefix is another namespace; slashes around a prefix do not matter.
        other = make_store(s3_endpoint, bucket, prefix=f"/{store.prefix}-other/")
        try:
            assert other.prefix == f"{store.prefix}-other"
            with pytest.raises(FileNotFoundError):
                await read_all(other.open(k))
        finally:
            await other.aclose()
        unprefixed = make_store(s3_endpoint, bucket)
        try:
            await unprefixed.put_file(k, source)
            assert k in await object_keys(unprefixed)
            await unprefixed.delete(k)
        finally:
            await unprefixed.aclose()

    @pytest.mark.parametrize(
        "bad", ["../etc/passwd", "contributions/../x", "/abs/path", "Upper/x", "single", ""]
    )
    async def test_bad_key_rejected(self, store: S3Storage, tmp_path: Path, bad: str) -> None:
        source = tmp_path / "upload"
        source.write_bytes(b"x")
        with pytest.raises(ValueError, match="bad storage key"):
            await store.put_file(bad, source)
        with pytest.raises(ValueError, match="bad storage key"):
            await read_all(store.open(bad))
        with pytest.raises(ValueError, match="bad storage key"):
            await store.delete(bad)


def s3_settings(endpoint: str, bucket: str) -> Settings:
    return get_settings().model_copy(
        update={
            "storage_backend": "s3",
            "s3_endpoint_url": endpoint,
            "s3_bucket": bucket,
            "s3_access_key_id": "testing",
            "s3_secret_access_key": SecretStr("testing"),
            "s3_prefix": "api",
            "s3_addressing_style": "path",
        }
    )


class TestS3Backend:
    async def test_settings_choose_s3(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        world: World,
        s3_endpoint: str,
        bucket: str,
    ) -> None:
        settings = s3_settings(s3_endpoint, bucket)
        chosen = storage_for(settings)  # the real choice, by the settings
        assert isinstance(chosen, S3Storage)
        app.dependency_overrides.pop(get_storage, None)
        # Put back by hand: monkeypatch cannot see State's attributes and would delete the
        # application's store on undo (its shutdown then fails).
        previous, app.state.storage = app.state.storage, chosen
        try:
            record = await create(client, world.alice, world.tree.r1)
            pdf = b"%PDF-1.4\n" + secrets.token_bytes(2 * CHUNK) + b"\n%%EOF\n"
            r = await upload(
                client, world.alice.headers, record["id"], pdf, "证明.pdf", "application/pdf"
            )
            assert r.status_code == 201, r.text
            attachment = r.json()
            (name,) = [k for k in await object_keys(chosen) if k.startswith("api/")]
            assert name.startswith(f"api/contributions/{uuid.UUID(record['id']).hex}/")
            r = await client.get(
                f"/contributions/{record['id']}/attachments/{attachment['id']}",
                headers=world.alice.headers,
            )
            assert r.status_code == 200
            assert r.content == pdf
            assert r.headers["content-type"] == "application/pdf"
        finally:
            app.state.storage = previous
            await chosen.aclose()

    def test_production_needs_a_bucket(self) -> None:
        with pytest.raises(ConfigError, match="QUYU_S3_BUCKET"):
            production_s3()
        with pytest.raises(ConfigError, match="QUYU_S3_SECRET_ACCESS_KEY"):
            production_s3(s3_bucket=BUCKET, s3_access_key_id="id")
        assert production_s3(s3_bucket=BUCKET).storage_backend == "s3"


def production_s3(**overrides: Any) -> Settings:
    key = SecretStr(base64.b64encode(secrets.token_bytes(32)).decode())
    return Settings(
        env="production",
        jwt_secret=SecretStr(secrets.token_urlsafe(48)),
        field_encryption_key=key,
        blind_index_key=key,
        storage_backend="s3",
        **overrides,
    )


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that refuses every request with the status and code its server
    carries (`status`, `code`), as MinIO answers when its drives are full."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, code = self.server.refusal  # type: ignore[attr-defined]
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{code}</Code><Message>refused by the test</Message>"
            "<Resource>/quyu-evidence/x</Resource><RequestId>1</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def refusing_s3() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class TestS3Faults:
    """A store that is out of space or out of reach is the server's problem: 507 or 503 with
    a code and one error line, nothing written."""

    async def _upload_through(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        world: World,
        store: S3Storage,
        sessionmaker: async_sessionmaker[AsyncSession],
        caplog: pytest.LogCaptureFixture,
    ) -> httpx.Response:
        app.dependency_overrides[get_storage] = lambda: store
        record = await create(client, world.alice, world.tree.r1)
        before = await written(sessionmaker)
        try:
            with caplog.at_level(logging.INFO):
                r = await upload(
                    client, world.alice.headers, record["id"], PDF, "证明.pdf", "application/pdf"
                )
        finally:
            await store.aclose()
        assert await written(sessionmaker) == before
        (line,) = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert line.name == "quyu.storage" and line.levelno == logging.ERROR
        assert line.exc_info is None and line.__dict__["where"] == "s3"
        return r

    async def test_a_store_that_does_not_answer_is_503(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        store = make_store(f"http://127.0.0.1:{free_port()}", BUCKET)
        r = await self._upload_through(app, client, world, store, sessionmaker, caplog)
        assert_problem(r, 503, "storage_unavailable")
        assert "retry-after" in r.headers

    @pytest.mark.parametrize(
        ("status", "code", "answer"),
        [
            (507, "XMinioStorageFull", (507, "storage_full")),
            (403, "AccessDenied", (503, "storage_unavailable")),
            (404, "NoSuchBucket", (503, "storage_unavailable")),
        ],
    )
    async def test_a_refusing_store(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
        caplog: pytest.LogCaptureFixture,
        refusing_s3: http.server.ThreadingHTTPServer,
        status: int,
        code: str,
        answer: tuple[int, str],
    ) -> None:
        refusing_s3.refusal = (status, code)  # type: ignore[attr-defined]
        host, port = refusing_s3.server_address[:2]
        store = make_store(f"http://{host!s}:{port}", BUCKET)
        r = await self._upload_through(app, client, world, store, sessionmaker, caplog)
        assert_problem(r, *answer)
        (line,) = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert line.__dict__["reason"] == f"{status} {code}"
