"""Request bodies are bounded while they stream, before anything parses or authenticates them.

The attack: a 64 MB JSON body to an anonymous endpoint was read and parsed whole, and a body
sent with a bad token was read whole before its 401.  The answer now: 413
`payload_too_large` from the declared length alone, or as soon as a chunked body passes the
limit, with the bytes the client had still to send left unread.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message, Receive, Scope, Send

from app.config import get_settings
from app.contributions.evidence.media import MAX_BYTES
from app.core.limits import InputLimitsMiddleware
from app.main import create_app
from app.models.user import User
from tests.contributions.helpers import body as contribution_body
from tests.contributions.helpers import make_member
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem

MB = 1024 * 1024
LIMIT = get_settings().max_body_bytes


class Pulled:
    """A request body the test can see being read: `pulled` counts the bytes taken so far."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.pulled = 0

    async def __call__(self) -> AsyncIterator[bytes]:
        head = b'{"phone": "13900000000", "password": "secret-enough", "name": "'
        self.pulled += len(head)
        yield head
        while self.pulled < self.total:
            self.pulled += self.chunk
            yield b"x" * self.chunk
        yield b'"}'


async def users(db: AsyncSession) -> int:
    return int((await db.execute(select(func.count()).select_from(User))).scalar_one())


class TestDeclaredLength:
    async def test_64_mb_claimed_to_an_anonymous_endpoint_is_413_unread(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        body = Pulled(64 * MB)
        before = await users(db)
        r = await client.post(
            "/auth/register",
            content=body(),
            headers={"Content-Type": "application/json", "Content-Length": str(64 * MB)},
        )
        assert_problem(r, 413, "payload_too_large")
        assert body.pulled == 0
        assert await users(db) == before

    async def test_a_bad_token_does_not_get_its_401_before_the_413(
        self, client: httpx.AsyncClient
    ) -> None:
        body = Pulled(64 * MB)
        r = await client.patch(
            "/me",
            content=body(),
            headers={
                "Authorization": "Bearer not-a-token",
                "Content-Type": "application/json",
                "Content-Length": str(64 * MB),
            },
        )
        assert_problem(r, 413, "payload_too_large")
        assert body.pulled == 0

    async def test_one_byte_over_the_limit(self, client: httpx.AsyncClient) -> None:
        payload = json.dumps({"name": "x" * LIMIT}).encode()[: LIMIT + 1]
        r = await client.post(
            "/auth/register", content=payload, headers={"Content-Type": "application/json"}
        )
        assert_problem(r, 413, "payload_too_large")

    async def test_a_body_under_the_limit_is_parsed(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        """Just under 1 MB reaches validation: the name is too long, 422, not 413."""
        payload = {"phone": "13900000000", "password": "secret-enough", "name": "x" * (LIMIT - 100)}
        r = await client.post("/auth/register", json=payload)
        assert_problem(r, 422, "validation_error")


class TestChunked:
    async def test_a_chunked_body_is_cut_as_soon_as_it_passes_the_limit(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        body = Pulled(64 * MB)
        before = await users(db)
        r = await client.post(
            "/auth/register", content=body(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in r.request.headers
        assert_problem(r, 413, "payload_too_large")
        assert body.pulled <= LIMIT + body.chunk + 1024
        assert await users(db) == before

    async def test_with_a_bad_token_too(self, client: httpx.AsyncClient) -> None:
        body = Pulled(64 * MB)
        r = await client.patch(
            "/me",
            content=body(),
            headers={"Authorization": "Bearer not-a-token", "Content-Type": "application/json"},
        )
        assert_problem(r, 413, "payload_too_large")
        assert body.pulled <= LIMIT + body.chunk + 1024

    async def test_a_form_body_is_bounded_as_well(self, client: httpx.AsyncClient) -> None:
        async def form() -> AsyncIterator[bytes]:
            yield b"grant_type=password&username=13900000000&password="
            for _ in range(64):
                yield b"x" * MB

        r = await client.post(
            "/auth/token",
            content=form(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert_problem(r, 413, "payload_too_large")


class TestSetting:
    async def test_the_limit_is_a_setting(self, app: FastAPI) -> None:
        small = create_app(
            get_settings().model_copy(update={"max_body_bytes": 4096}), configure_logs=False
        )
        transport = httpx.ASGITransport(app=small)
        async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as c:
            r = await c.post("/auth/register", json={"name": "x" * 5000})
            assert_problem(r, 413, "payload_too_large")


class TestUploads:
    async def test_multipart_elsewhere_has_the_body_limit(self, client: httpx.AsyncClient) -> None:
        """Only the upload endpoint takes 10 MB: a multipart body anywhere else is a body."""

        async def parts() -> AsyncIterator[bytes]:
            yield b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\n'
            for _ in range(4):
                yield b"x" * MB
            yield b"\r\n--xyz--\r\n"

        r = await client.post(
            "/auth/register",
            content=parts(),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert_problem(r, 413, "payload_too_large")

    async def test_an_upload_envelope_past_the_limit_is_cut_while_it_streams(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        """The file part stays small, so the upload's own 10 MB check never fires: a form field
        of 40 MB around it is stopped by the body limit, long before its end."""
        member = await make_member(db, tree.r1)
        record = await client.post(
            "/contributions", json=contribution_body(tree.r1), headers=member.headers
        )
        assert record.status_code == 201, record.text
        pulled = 0

        async def parts() -> AsyncIterator[bytes]:
            nonlocal pulled
            head = b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
            pulled += len(head)
            yield head
            for _ in range(40):
                pulled += MB
                yield b"x" * MB
            yield b"\r\n--xyz--\r\n"

        r = await client.post(
            f"/contributions/{record.json()['id']}/attachments",
            content=parts(),
            headers={**member.headers, "Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert_problem(r, 413, "attachment_too_large")
        assert pulled <= MAX_BYTES + 2 * MB


class TestMiddleware:
    async def test_a_client_that_leaves_mid_body_is_not_a_server_error(self) -> None:
        called = False

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal called
            called = True

        messages: list[Message] = [
            {"type": "http.request", "body": b'{"na', "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[Message] = []

        async def receive() -> Message:
            return messages.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        middleware = InputLimitsMiddleware(
            app, body_limit=1024, upload_limit=2048, upload_paths=re.compile("/upload")
        )
        scope: Scope = {
            "type": "http",
            "method": "POST",
            "path": "/x",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        await middleware(scope, receive, send)
        assert not called
        assert sent[0]["status"] == 400
