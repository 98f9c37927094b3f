"""Pure ASGI middleware: request context (id, language, access log, metrics, last-resort
500), conditional GETs (ETag / If-None-Match) and idempotent POSTs (Idempotency-Key)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import clock
from app.core.errors import (
    PROBLEM_JSON,
    database_unavailable,
    disk_fault,
    problem_body,
    storage_failed,
)
from app.core.i18n import current_lang, negotiate
from app.core.logging import request_id_var
from app.core.metrics import LATENCY, REQUESTS
from app.core.tokens import peek_subject
from app.db.faults import is_unavailable
from app.db.session import separate_transaction
from app.models.kit import IdempotencyRecord

access_log = logging.getLogger("quyu.access")
error_log = logging.getLogger("quyu.errors")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _route_template(scope: Scope) -> str:
    """The matched route's template as served, router prefixes included: a route included
    under a prefix knows only its own part ("/orgs/{org_id}"), and the prefix is the part of
    the request path before the segments that part matched.  No route here uses a `:path`
    parameter, so one template segment matches exactly one path segment."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "<unmatched>"
    segments = str(scope.get("path", "")).split("/")
    own = template.count("/")
    prefix = "/".join(segments[: len(segments) - own]) if len(segments) > own else ""
    return prefix + template


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContextMiddleware:
    """X-Request-ID taken or made and echoed; language negotiated; one JSON access-log line
    and Prometheus samples per request; an unhandled error becomes a logged 500 problem."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        rid_token = request_id_var.set(request_id)
        lang_token = current_lang.set(negotiate(headers.get("accept-language")))
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                out = MutableHeaders(scope=message)
                out["X-Request-ID"] = request_id
                out.append("Vary", "Accept-Language")
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if is_unavailable(exc):
                # The database is away: retry later, not a bug (app/db/faults.py).
                status, body, extra_headers = database_unavailable(exc)
                if not response_started:
                    await _send_json(
                        send,
                        status,
                        body,
                        [
                            (b"x-request-id", request_id.encode()),
                            *((k.lower().encode(), v.encode()) for k, v in extra_headers.items()),
                        ],
                    )
                return
            fault = disk_fault(exc)
            if fault is not None:
                # A disk of the server is full or read-only where no code expected it.
                error = storage_failed(fault, "request")
                status = error.status
                if not response_started:
                    await _send_json(
                        send,
                        status,
                        problem_body(error.code, status),
                        [
                            (b"x-request-id", request_id.encode()),
                            *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
                        ],
                    )
                return
            error_log.exception("unhandled error", extra={"error_type": type(exc).__name__})
            status = 500
            if not response_started:
                await _send_json(
                    send,
                    500,
                    problem_body("internal_error", 500),
                    [(b"x-request-id", request_id.encode())],
                )
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            if route not in ("/healthz", "/metrics"):
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            current_lang.reset(lang_token)
            request_id_var.reset(rid_token)


class ETagMiddleware:
    """A strong ETag on every 200 JSON answer to GET; `If-None-Match` with it gives 304."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if_none_match = Headers(scope=scope).get("if-none-match")
        start: Message | None = None
        chunks: list[bytes] = []
        passthrough = False

        async def send_wrapper(message: Message) -> None:
            nonlocal start, passthrough
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message["headers"]).get("content-type", "")
                if message["status"] != 200 or not content_type.startswith("application/json"):
                    passthrough = True
                    await send(message)
                    return
                start = message
                return
            if passthrough or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            headers = MutableHeaders(scope=start)
            headers["ETag"] = etag
            if if_none_match and _etag_matches(if_none_match, etag):
                del headers["content-length"]
                del headers["content-type"]
                start["status"] = 304
                await send(start)
                await send({"type": "http.response.body", "body": b""})
                return
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_wrapper)


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return etag in candidates


_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_IDEMPOTENT_CONTENT = ("application/json", "application/x-www-form-urlencoded", "")
_MAX_IDEMPOTENT_BODY = 1024 * 1024
STALE_IN_FLIGHT = timedelta(minutes=5)
_REPLAYED_HEADERS = ("content-type", "location", "etag")


class IdempotencyMiddleware:
    """`Idempotency-Key` on POST, kept per caller for 24 h in the database.

    Same key and body: the first answer is replayed with `Idempotent-Replayed: true`; same key
    with another body: 422 `idempotency_key_reused`; the first still in flight: 409
    `idempotency_in_flight`.  Answers of 5xx are not kept, so the client may retry them.
    """

    def __init__(self, app: ASGIApp, *, ttl_seconds: int) -> None:
        self.app = app
        self.ttl = timedelta(seconds=ttl_seconds)

    def _factory(self, scope: Scope) -> async_sessionmaker[AsyncSession]:
        factory: async_sessionmaker[AsyncSession] = scope["app"].state.sessionmaker
        return factory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get("idempotency-key")
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if key is None or content_type not in _IDEMPOTENT_CONTENT:
            await self.app(scope, receive, send)
            return
        if not _KEY.match(key):
            await _send_json(send, 422, problem_body("idempotency_key_invalid", 422), [])
            return

        body, too_large = await _read_body(receive, _MAX_IDEMPOTENT_BODY)
        if too_large:
            await _send_json(send, 413, problem_body("payload_too_large", 413), [])
            return
        auth = headers.get("authorization", "")
        subject = peek_subject(auth[7:]) if auth.lower().startswith("bearer ") else None
        caller = subject or "anonymous"
        digest = hashlib.sha256()
        for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode()):
            digest.update(part.encode() + b"\0")
        digest.update(body)
        request_hash = digest.hexdigest()

        factory = self._factory(scope)
        claim = await self._claim(factory, caller, key, request_hash)
        if isinstance(claim, IdempotencyRecord):
            await self._replay(claim, request_hash, send)
            return

        record_id = claim
        start: Message | None = None
        chunks: list[bytes] = []

        body_sent = False

        async def replay_receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await self._forget(factory, record_id)
            raise
        if start is None or start["status"] >= 500 or _no_store(start):
            # 5xx may be retried; `Cache-Control: no-store` answers (tokens) are never kept.
            await self._forget(factory, record_id)
            return
        kept = {
            k.decode().lower(): v.decode()
            for k, v in start["headers"]
            if k.decode().lower() in _REPLAYED_HEADERS
        }
        async with separate_transaction(factory, why="record the answer to replay") as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.id == record_id)
                .values(
                    state="done",
                    status_code=start["status"],
                    headers=kept,
                    body=b"".join(chunks),
                )
            )

    async def _claim(
        self,
        factory: async_sessionmaker[AsyncSession],
        caller: str,
        key: str,
        request_hash: str,
    ) -> uuid.UUID | IdempotencyRecord:
        """Insert an in-flight record (ours to fill) or return the existing one."""
        now = clock.now()
        for _ in range(3):
            try:
                async with separate_transaction(
                    factory, why="other requests must see the claim before the work starts"
                ) as session:
                    record = IdempotencyRecord(
                        caller=caller,
                        key=key,
                        request_hash=request_hash,
                        state="in_flight",
                        expires_at=now + self.ttl,
                    )
                    session.add(record)
                    await session.flush()
                    return record.id
            except IntegrityError:
                pass
            async with separate_transaction(factory, why="read the claim that won") as session:
                existing = (
                    await session.execute(
                        select(IdempotencyRecord).where(
                            IdempotencyRecord.caller == caller, IdempotencyRecord.key == key
                        )
                    )
                ).scalar_one_or_none()
                if existing is None:
                    continue
                stale = (
                    existing.state == "in_flight" and existing.created_at < now - STALE_IN_FLIGHT
                )
                if existing.expires_at <= now or stale:
                    await session.execute(
                        delete(IdempotencyRecord).where(
                            IdempotencyRecord.id == existing.id,
                            IdempotencyRecord.created_at == existing.created_at,
                        )
                    )
                    continue
                return existing
        raise RuntimeError("could not claim idempotency key")

    async def _replay(self, record: IdempotencyRecord, request_hash: str, send: Send) -> None:
        if record.request_hash != request_hash:
            await _send_json(send, 422, problem_body("idempotency_key_reused", 422), [])
            return
        if record.state != "done" or record.status_code is None:
            await _send_json(send, 409, problem_body("idempotency_in_flight", 409), [])
            return
        body = record.body or b""
        headers = [(k.encode(), v.encode()) for k, v in (record.headers or {}).items()]
        headers += [
            (b"content-length", str(len(body)).encode()),
            (b"idempotent-replayed", b"true"),
        ]
        await send(
            {"type": "http.response.start", "status": record.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})

    async def _forget(
        self, factory: async_sessionmaker[AsyncSession], record_id: uuid.UUID
    ) -> None:
        async with separate_transaction(factory, why="free the key of a failed request") as session:
            await session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id)
            )


def _no_store(start: Message) -> bool:
    return "no-store" in Headers(raw=start["headers"]).get("cache-control", "").lower()


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False
