"""`quyu serve --workers 2`: the login throttle, `Idempotency-Key` and refresh-token rotation
hold across worker processes, because all three live in the database and nowhere else.

A real server runs as a subprocess on its own throwaway database: a PostgreSQL database made
and dropped here (QUYU_TEST_DB=postgres), else a SQLite file in WAL mode.  The app does not
say which process answered, so the test finds out from the operating system (Linux `/proc`):
the worker holding the server side of a TCP connection is the one that answers on it.  Each
request goes over a fresh connection that was opened, and checked, on the worker wanted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import PG_ADMIN_DSN, TEST_DB
from tests.fixtures.problems import assert_problem
from tests.fixtures.processes import free_port, quyu_executable
from tests.identity.helpers import assert_oauth_error, bearer

# Runs on both databases (SQLite as a WAL file shared by the processes); the workers are told
# apart through Linux's /proc.
pytestmark = [
    pytest.mark.skipif(
        not Path("/proc/net/tcp").exists(), reason="tells workers apart through Linux /proc"
    ),
    # Under pytest-xdist (--dist loadgroup) on one worker, so that the server starts once.
    pytest.mark.xdist_group("multiworker"),
]

WORKERS = 2
LIMIT_PER_PHONE = 5
# A lock far longer than the run, so that none ends halfway through a test.
LOCK_SECONDS = 10**6
PASSWORD = "right-password-1"
STARTUP_SECONDS = 30.0
STOP_SECONDS = 20.0
MAX_CONNECT_TRIES = 300


# --- which process holds a connection (Linux /proc) -----------------------------------------


def _server_sockets(port: int) -> dict[int, int]:
    """Server-side IPv4 sockets of 127.0.0.1:`port`: the peer's port -> the socket's inode."""
    found: dict[int, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.rsplit(":", 1)[1], 16) == port and inode:
            found[int(remote.rsplit(":", 1)[1], 16)] = inode
    return found


def _session_pids(session_id: int) -> list[int]:
    """The processes of the session `session_id` (the server and its workers)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[3]) == session_id:
            pids.append(int(entry.name))
    return pids


def _socket_owner(session_id: int, inode: int) -> int | None:
    target = f"socket:[{inode}]"
    for pid in _session_pids(session_id):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
            for fd in fds:
                if os.readlink(fd) == target:
                    return pid
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return None


# --- the server subprocess ------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    base_url: str
    port: int
    session_id: int  # the `quyu serve` process leads a session of its own, workers included
    database_url: str

    def worker_of(self, response: httpx.Response) -> int:
        """The worker process that answered `response` (its connection is still open)."""
        stream = response.extensions["network_stream"]
        _host, client_port = stream.get_extra_info("client_addr")
        inode = _server_sockets(self.port).get(client_port)
        assert inode is not None, f"no server socket for client port {client_port}"
        pid = _socket_owner(self.session_id, inode)
        assert pid is not None, f"no process of the server holds socket {inode}"
        assert pid != self.session_id, "the supervisor itself answered"
        return pid


def _migrate(env: Mapping[str, str], cwd: Path) -> None:
    done = subprocess.run(  # noqa: S603
        [quyu_executable(), "migrate"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _start(env: Mapping[str, str], cwd: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603
            [
                quyu_executable(),
                "serve",
                "--workers",
                str(WORKERS),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole process group, SIGKILL if it lingers; nothing may stay behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_SECONDS)
    # multiprocessing's resource tracker ignores SIGTERM and leaves once the supervisor is
    # gone: give it (and any worker) a moment, then kill what is left.
    if not _wait_session_gone(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _wait_session_gone(proc.pid)


def _wait_session_gone(session_id: int) -> bool:
    deadline = time.monotonic() + STOP_SECONDS
    while _session_pids(session_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def _admin_execute(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    workdir = tmp_path_factory.mktemp("multiworker")
    if TEST_DB == "postgres":
        name = f"quyu_multiworker_{secrets.token_hex(4)}"
        base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        database_url = f"{base}/{name}"
        await _admin_execute(f'CREATE DATABASE "{name}"')
    else:
        name = ""
        database_url = f"sqlite+aiosqlite:///{workdir / 'quyu.db'}"
    (workdir / "metrics").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUYU_")}
    env.update(
        {
            "QUYU_ENV": "test",
            "QUYU_DATABASE_URL": database_url,
            # Explicit secrets: every worker signs and reads tokens with the same keys, and
            # nothing is generated into a secrets file (which would land in `workdir` anyway).
            "QUYU_JWT_SECRET": secrets.token_urlsafe(48),
            "QUYU_FIELD_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "QUYU_BLIND_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "QUYU_SECRETS_FILE": str(workdir / "secrets.json"),
            "QUYU_STORAGE_DIR": str(workdir / "uploads"),
            "QUYU_LOGIN_FAILURES_PER_PAIR": str(LIMIT_PER_PHONE),
            "QUYU_LOGIN_FAILURES_PER_PHONE": str(LIMIT_PER_PHONE),
            "QUYU_LOGIN_FAILURES_PER_ADDRESS": "100000",
            "QUYU_LOGIN_LOCK_BASE_SECONDS": str(LOCK_SECONDS),
            "QUYU_LOGIN_LOCK_MAX_SECONDS": str(LOCK_SECONDS),
            "QUYU_LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        }
    )
    proc: subprocess.Popen[bytes] | None = None
    log = workdir / "serve.log"
    try:
        await asyncio.to_thread(_migrate, env, workdir)
        port = free_port()
        proc = _start(env, workdir, port, log)
        base_url = f"http://127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_SECONDS
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as c:
            while True:
                assert proc.poll() is None, "quyu serve exited:\n" + log.read_text()
                try:
                    if (await c.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert loop.time() < deadline, "not ready in time:\n" + log.read_text()
                await asyncio.sleep(0.2)
        yield Server(base_url=base_url, port=port, session_id=proc.pid, database_url=database_url)
    finally:
        if proc is not None:
            await asyncio.to_thread(_stop, proc)
        if name:
            await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for suffix in ("", "-wal", "-shm"):
            (workdir / f"quyu.db{suffix}").unlink(missing_ok=True)
    assert proc is not None
    assert not _session_pids(proc.pid), "processes of quyu serve outlived the test"


async def _connect(server: Server, worker: int | None = None) -> tuple[httpx.AsyncClient, int]:
    """A client holding one fresh TCP connection that `worker` (any if None) accepted."""
    for _ in range(MAX_CONNECT_TRIES):
        client = httpx.AsyncClient(
            base_url=server.base_url + "/api/v1",
            timeout=30,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        r = await client.get(server.base_url + "/healthz")
        assert r.status_code == 200, r.text
        pid = server.worker_of(r)
        if worker is None or pid == worker:
            return client, pid
        await client.aclose()
    await client.aclose()
    raise AssertionError(f"no connection landed on worker {worker}")


async def _on(server: Server, worker: int, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request, answered by `worker`, on a fresh connection."""
    client, _ = await _connect(server, worker)
    try:
        r = await client.request(method, url, **kwargs)
        assert server.worker_of(r) == worker  # the same connection, so the same process
        return r
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
async def workers(server: Server) -> tuple[int, int]:
    """The two worker processes, both seen answering (both are up)."""
    seen: set[int] = set()
    for _ in range(MAX_CONNECT_TRIES):
        client, pid = await _connect(server)
        await client.aclose()
        seen.add(pid)
        if len(seen) == WORKERS:
            first, second = sorted(seen)
            return first, second
    raise AssertionError(f"only workers {seen} ever answered")


async def _count(server: Server, sql: str, **params: Any) -> int:
    engine = create_async_engine(server.database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(sql), params)).scalar_one())
    finally:
        await engine.dispose()


def _phone() -> str:
    return "139" + f"{secrets.randbelow(10**8):08d}"


async def _register(server: Server, worker: int, phone: str) -> None:
    body = {"phone": phone, "password": PASSWORD, "name": "多进程测试"}
    r = await _on(server, worker, "POST", "/auth/register", json=body)
    assert r.status_code == 201, r.text


def _login_form(phone: str, password: str) -> dict[str, Any]:
    return {"data": {"grant_type": "password", "username": phone, "password": password}}


def _refresh_form(token: str) -> dict[str, Any]:
    return {"data": {"grant_type": "refresh_token", "refresh_token": token}}


class TestLoginThrottleAcrossWorkers:
    async def test_attempts_alternating_between_workers_share_one_count(
        self, server: Server, workers: tuple[int, int]
    ) -> None:
        phone = _phone()
        await _register(server, workers[0], phone)
        # LIMIT_PER_PHONE wrong attempts in all, taking turns: the first worker sees 3, the
        # second only 2 of them.
        for i in range(LIMIT_PER_PHONE):
            r = await _on(
                server, workers[i % 2], "POST", "/auth/token", **_login_form(phone, "wrong-pw-1")
            )
            assert_oauth_error(r, 400, "invalid_grant")
        # Both refuse now, the second although it saw fewer than the limit itself, and even
        # the right password: a locked phone's password is not looked at.
        for worker in (workers[1], workers[0]):
            r = await _on(server, worker, "POST", "/auth/token", **_login_form(phone, "wrong-pw-1"))
            assert_problem(r, 429, "too_many_requests")
            assert int(r.headers["retry-after"]) >= 1
            r = await _on(server, worker, "POST", "/auth/token", **_login_form(phone, PASSWORD))
            assert_problem(r, 429, "too_many_requests")
            assert int(r.headers["retry-after"]) >= 1

    async def test_concurrent_flood_is_held_at_the_limit_not_limit_times_workers(
        self, server: Server, workers: tuple[int, int]
    ) -> None:
        phone = _phone()
        await _register(server, workers[0], phone)
        # Each worker gets LIMIT_PER_PHONE attempts, all at once: were the count per process,
        # every one of them would be answered (400), twice the limit.
        flood = [workers[i % 2] for i in range(WORKERS * LIMIT_PER_PHONE)]
        answers = await asyncio.gather(
            *(
                _on(server, w, "POST", "/auth/token", **_login_form(phone, "wrong-pw-2"))
                for w in flood
            )
        )
        statuses = sorted(r.status_code for r in answers)
        expected = [400] * LIMIT_PER_PHONE + [429] * (len(flood) - LIMIT_PER_PHONE)
        assert statuses == expected, [r.text for r in answers]
        for r in answers:
            if r.status_code == 429:
                assert_problem(r, 429, "too_many_requests")
                assert int(r.headers["retry-after"]) >= 1
            else:
                assert_oauth_error(r, 400, "invalid_grant")
        for worker in workers:
            r = await _on(server, worker, "POST", "/auth/token", **_login_form(phone, PASSWORD))
            assert_problem(r, 429, "too_many_requests")


class TestIdempotencyKeyAcrossWorkers:
    async def test_replayed_by_either_worker_one_row(
        self, server: Server, workers: tuple[int, int]
    ) -> None:
        phone = _phone()
        body = {"phone": phone, "password": PASSWORD, "name": "幂等测试"}
        headers = {"Idempotency-Key": f"mw-{uuid.uuid4()}"}
        answers = [
            await _on(server, workers[i % 2], "POST", "/auth/register", json=body, headers=headers)
            for i in range(6)
        ]
        first, replays = answers[0], answers[1:]
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        for r in replays:
            assert r.status_code == 201, r.text
            assert r.content == first.content
            assert r.headers["content-type"] == first.headers["content-type"]
            assert r.headers["idempotent-replayed"] == "true"
        assert await _count(server, "SELECT count(*) FROM users WHERE phone = :p", p=phone) == 1
        assert (
            await _count(
                server,
                "SELECT count(*) FROM idempotency_records WHERE key = :k",
                k=headers["Idempotency-Key"],
            )
            == 1
        )
        # Anonymous answers are keyed by the request itself: someone else's registration
        # with the same key is a registration of its own (never 422), replayed by either
        # worker in its turn.
        other = {**body, "phone": _phone()}
        answers = [
            await _on(server, worker, "POST", "/auth/register", json=other, headers=headers)
            for worker in workers
        ]
        assert answers[0].status_code == 201, answers[0].text
        assert "idempotent-replayed" not in answers[0].headers
        assert answers[0].json()["phone"] == other["phone"]
        assert answers[1].status_code == 201, answers[1].text
        assert answers[1].headers["idempotent-replayed"] == "true"
        assert answers[1].content == answers[0].content
        assert (
            await _count(server, "SELECT count(*) FROM users WHERE phone = :p", p=other["phone"])
            == 1
        )

    async def test_concurrent_duplicates_create_one_row(
        self, server: Server, workers: tuple[int, int]
    ) -> None:
        phone = _phone()
        body = {"phone": phone, "password": PASSWORD, "name": "幂等并发"}
        headers = {"Idempotency-Key": f"mw-{uuid.uuid4()}"}
        answers = await asyncio.gather(
            *(
                _on(server, workers[i % 2], "POST", "/auth/register", json=body, headers=headers)
                for i in range(8)
            )
        )
        created = [r for r in answers if r.status_code == 201]
        assert created, [r.text for r in answers]
        for r in answers:
            if r.status_code == 201:
                assert r.content == created[0].content
            else:
                # The first is still being answered elsewhere: retry later, nothing was done.
                assert_problem(r, 409, "idempotency_in_flight")
        assert await _count(server, "SELECT count(*) FROM users WHERE phone = :p", p=phone) == 1
        # Once done, every worker replays the one answer.
        for worker in workers:
            r = await _on(server, worker, "POST", "/auth/register", json=body, headers=headers)
            assert r.status_code == 201, r.text
            assert r.content == created[0].content
            assert r.headers["idempotent-replayed"] == "true"


class TestRefreshTokenReplayAcrossWorkers:
    @pytest.mark.parametrize("order", ["first-then-second", "second-then-first"])
    async def test_spent_token_is_refused_by_the_other_worker(
        self, server: Server, workers: tuple[int, int], order: str
    ) -> None:
        here, there = workers if order == "first-then-second" else (workers[1], workers[0])
        phone = _phone()
        await _register(server, here, phone)
        r = await _on(server, here, "POST", "/auth/token", **_login_form(phone, PASSWORD))
        assert r.status_code == 200, r.text
        signed_in = r.json()
        # The other process accepts the access token: both sign with the same key.
        r = await _on(server, there, "GET", "/me", headers=bearer(signed_in["access_token"]))
        assert r.status_code == 200, r.text

        r = await _on(
            server, here, "POST", "/auth/token", **_refresh_form(signed_in["refresh_token"])
        )
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["refresh_token"] != signed_in["refresh_token"]

        # The spent token replayed to the other process: refused, and its session revoked.
        r = await _on(
            server, there, "POST", "/auth/token", **_refresh_form(signed_in["refresh_token"])
        )
        assert_oauth_error(r, 401, "invalid_grant")
        # So the successor is dead as well, whichever process is asked.
        for worker in (here, there):
            r = await _on(
                server, worker, "POST", "/auth/token", **_refresh_form(rotated["refresh_token"])
            )
            assert_oauth_error(r, 401, "invalid_grant")
        assert (
            await _count(
                server,
                "SELECT count(*) FROM user_sessions s JOIN users u ON u.id = s.user_id "
                "WHERE u.phone = :p AND s.revoked_reason = 'refresh_reuse'",
                p=phone,
            )
            == 1
        )
