"""`quyu serve` stops within QUYU_SHUTDOWN_TIMEOUT_SECONDS of SIGTERM, however slow a client.

A real server runs as a subprocess on a SQLite file of its own.  A client opens a request and
never finishes sending its body; SIGTERM then reaches the server, as it reaches a pod's
process when the grace period of deploy/k8s/api.yaml starts.  The server must cut that
request once the shutdown timeout has passed and exit, rather than wait for the client."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.fixtures.processes import free_port, quyu_executable

SHUTDOWN_TIMEOUT_SECONDS = 2
# The server's own clean-up after the timeout (closing the engine, the workers' exit), on a
# busy machine.  Without the timeout the server waits for the client for ever.
MARGIN_SECONDS = 10.0
STARTUP_SECONDS = 30.0


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUYU_")}
    env.update(
        {
            "QUYU_ENV": "test",
            "QUYU_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'quyu.db'}",
            "QUYU_JWT_SECRET": secrets.token_urlsafe(48),
            "QUYU_FIELD_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "QUYU_BLIND_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "QUYU_SECRETS_FILE": str(workdir / "secrets.json"),
            "QUYU_STORAGE_DIR": str(workdir / "uploads"),
            "QUYU_LOG_LEVEL": "WARNING",
            "QUYU_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT_SECONDS),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        }
    )
    return env


def _session_alive(session_id: int) -> bool:
    """Whether any process of the session `session_id` (the server, its workers) is still
    running; zombies (exited, not yet reaped) do not count."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == session_id and state != "Z":
            return True
    return False


@contextlib.contextmanager
def _serving(
    env: Mapping[str, str], workdir: Path, workers: int
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A ready `quyu serve` and its port; whatever is left of it is killed afterwards."""
    subprocess.run(  # noqa: S603
        [quyu_executable(), "migrate"],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            [quyu_executable(), "serve", "--workers", str(workers), "--port", str(port)],
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
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _slow_request(port: int) -> socket.socket:
    """A POST whose body never arrives in full: the app waits for the rest of it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /api/v1/auth/register HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 1000\r\n"
        b"\r\n"
        b'{"phone": "139'
    )
    return sock


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through Linux /proc")
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_with_a_slow_client_exits_within_the_shutdown_timeout(
    tmp_path: Path, workers: int
) -> None:
    (tmp_path / "metrics").mkdir()
    env = _env(tmp_path)
    with _serving(env, tmp_path, workers) as (proc, port):
        sock = _slow_request(port)
        with sock:
            time.sleep(0.5)  # the request has reached the app, which now awaits the body
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)  # the process itself, as the kubelet does
            deadline = started + SHUTDOWN_TIMEOUT_SECONDS + MARGIN_SECONDS
            # A zombie leader may still have threads finishing: wait for the exit status too.
            while (proc.poll() is None or _session_alive(proc.pid)) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            took = time.monotonic() - started
            assert proc.poll() is not None and not _session_alive(proc.pid), (
                f"quyu serve still running {took:.1f} s after SIGTERM:\n"
                + (tmp_path / "serve.log").read_text()
            )
            # It did wait for the open request (that is what the timeout is for), and the
            # client's connection was closed, not left hanging.
            assert took >= SHUTDOWN_TIMEOUT_SECONDS - 0.5, took
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(4096):
                    pass
