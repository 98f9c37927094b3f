"""The server dies between the commit and the answer: the retry replays the kept answer and
creates nothing.

A real `quyu serve` runs as a process on a PostgreSQL database of its own.  A client sends a
keyed registration and never reads the answer; the test watches the database, and the moment
the new account is committed it SIGKILLs the server (the answer may or may not have left; the
client never saw it).  The kept answer was committed in the same transaction as the account,
so it is there already.  After a restart the same retry replays it at once: there is no
in-flight claim that would have to time out first, because none is ever committed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import PG_ADMIN_DSN
from tests.fixtures.processes import free_port, quyu_executable

STARTUP_SECONDS = 30.0
COMMIT_SECONDS = 30.0

pytestmark = pytest.mark.postgres_only


async def _admin(sql: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@pytest.fixture
def database() -> Iterator[str]:
    """A database of the server's own, made and dropped here."""
    name = f"quyu_kill_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _env(workdir: Path, dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUYU_")}
    env.update(
        {
            "QUYU_ENV": "test",
            "QUYU_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://"),
            "QUYU_JWT_SECRET": secrets.token_urlsafe(48),
            "QUYU_FIELD_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "QUYU_BLIND_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "QUYU_SECRETS_FILE": str(workdir / "secrets.json"),
            "QUYU_STORAGE_DIR": str(workdir / "uploads"),
            "QUYU_LOG_LEVEL": "WARNING",
        }
    )
    return env


@contextlib.contextmanager
def _serving(env: dict[str, str], workdir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = workdir / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            [quyu_executable(), "serve", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert proc.poll() is None, "quyu serve exited:\n" + log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "not ready in time:\n" + log.read_text()
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _send_without_reading(port: int, body: bytes, key: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /api/v1/auth/register HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        b"Idempotency-Key: " + key.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )
    return sock


async def _fetch_count(dsn: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(sql, *args)
        return int(value)
    finally:
        await conn.close()


def _count(dsn: str, sql: str, *args: object) -> int:
    return asyncio.run(_fetch_count(dsn, sql, *args))


def test_killed_between_commit_and_answer_the_retry_replays(tmp_path: Path, database: str) -> None:
    env = _env(tmp_path, database)
    subprocess.run(  # noqa: S603
        [quyu_executable(), "migrate"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    phone = "139" + str(secrets.randbelow(10**8)).zfill(8)
    body = json.dumps({"phone": phone, "password": "long-enough-1", "name": "断电"}).encode()
    key = f"kill-{secrets.token_hex(4)}"
    users = "SELECT count(*) FROM users WHERE phone = $1"
    kept = "SELECT count(*) FROM idempotency_records WHERE key = $1 AND state = 'done'"

    with _serving(env, tmp_path, port) as proc:
        sock = _send_without_reading(port, body, key)
        with sock:
            deadline = time.monotonic() + COMMIT_SECONDS
            while _count(database, users, phone) == 0:
                assert time.monotonic() < deadline, "the registration never committed"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Committed together: the account and the answer to replay.
        assert _count(database, users, phone) == 1
        assert _count(database, kept, key) == 1

    with (
        _serving(env, tmp_path, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1") as client,
    ):
        retry = client.post(
            "/auth/register",
            content=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
        )
        assert retry.status_code == 201, retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.json()["phone"] == phone
        # Once more, for good measure: the same answer, still one account.
        again = client.post(
            "/auth/register",
            content=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
        )
        assert again.content == retry.content
    assert _count(database, users, phone) == 1
    assert _count(database, kept, key) == 1
