"""`Idempotency-Key` on POST, honoured in the route layer, after authentication.

The answer to keep is written in the same transaction as the work, through the request's own
session, just before `app.deps.DbSession` commits it: both are committed or neither is.

* A request reaches the endpoint's rules only after its guards, so an unauthenticated call
  of a protected endpoint is 401 and never an idempotency answer, and invalid input is 422
  with nothing kept.
* Stored answers belong to the caller who made them: the session behind a person's access
  token (a revoked or expired session replays nothing: its token is 401 first), or a city
  client.  Another caller's same key is another key.
* Anonymous requests are kept only on endpoints that opt in (`replays_anonymous`), counted per
  client address by a throttle (`QUYU_IDEMPOTENCY_ANONYMOUS_PER_ADDRESS` in
  `QUYU_IDEMPOTENCY_ANONYMOUS_WINDOW_SECONDS`), and keyed by the request itself (its keyed
  hash): two different requests with the same key never meet.  Elsewhere the header is
  ignored and nothing is kept.
* Only successful (2xx) answers with a body in memory are kept, never `Cache-Control:
  no-store` ones: a request that failed wrote nothing, and its key stays free for the retry.

Flow of a keyed request (`IdempotentRoute`):

1. FastAPI resolves the dependencies (guards, body); the wrapped endpoint then validates the
   key, hashes the request and looks (caller, key) up.  A fresh record with the same hash is
   replayed with `Idempotent-Replayed: true`; another hash is 422 `idempotency_key_reused`.
2. Otherwise the endpoint runs; its answer is serialized, and the record is inserted through
   the request's session before the session commits (the route handler returns inside the
   function-scoped dependencies, so DbSession exits after this).
3. Concurrent duplicates: the unique constraint on (caller, key) decides.  The insert of the
   loser waits for the winner's transaction (PostgreSQL) and fails once it committed; the
   loser's whole transaction is rolled back and it answers the winner's stored answer.  A
   loser whose own work failed first (a unique phone, a seat already taken) also answers the
   winner's answer when there is one.  No in-flight marker is ever committed, so nothing
   blocks a key after a request that wrote nothing; 409 `idempotency_in_flight` remains only
   for the rare loser that could not read the winner's answer (nothing was done: retry).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.config import Settings
from app.core import clock
from app.core.crypto import blind_index
from app.core.errors import AppError
from app.core.metrics import IDEMPOTENCY
from app.core.middleware import route_template
from app.core.throttle import throttle_address
from app.db.session import separate_transaction
from app.deps import client_address
from app.models.kit import IdempotencyRecord

log = logging.getLogger("quyu.idempotency")

HEADER = "Idempotency-Key"
# Printable ASCII without space, 1 to 255 characters (the same rule as OpenAPI's pattern).
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
KEY_PATTERN = "^[!-~]{1,255}$"
_REPLAYED_HEADERS = ("content-type", "location", "etag")
_ANONYMOUS_ATTR = "__quyu_replays_anonymous__"

E = TypeVar("E", bound=Callable[..., Any])


class Mode(StrEnum):
    CALLER = "caller"  # kept per session (person) or city client
    ANONYMOUS = "anonymous"  # kept per request hash, under a per-address throttle


def replays_anonymous(endpoint: E) -> E:
    """Opt an endpoint without authentication in: its keyed answers are kept and replayed.
    Put it under the route decorator."""
    setattr(endpoint, _ANONYMOUS_ATTR, True)
    return endpoint


@dataclass
class _Pending:
    """What step 2 needs to keep the answer of a request that missed."""

    session: AsyncSession
    caller: str
    key: str
    request_hash: str


@dataclass
class _Context:
    request: Request
    mode: Mode
    reads_body: bool  # the route has a body FastAPI read and parsed (JSON)
    pending: _Pending | None = None


_current: ContextVar[_Context | None] = ContextVar("quyu_idempotency", default=None)


class _Replay(Exception):
    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__("replay")
        self.record = record


def _request_hash(request: Request, body: bytes) -> str:
    """A keyed hash of what the request asks: method, path, query and body.  Keyed, because
    a body may hold a password (registration) and the hash is kept for a day."""
    digest = hashlib.sha256()
    for part in (request.method, request.url.path, request.url.query):
        digest.update(part.encode() + b"\0")
    digest.update(body)
    return blind_index(digest.hexdigest(), context="idempotency.request")


async def _lookup(session: AsyncSession, caller: str, key: str) -> IdempotencyRecord | None:
    """The live record of (caller, key); an expired one (or an unfinished claim left by an
    earlier version) is deleted in the caller's transaction and counts as none."""
    record = (
        await session.execute(
            select(IdempotencyRecord).where(
                IdempotencyRecord.caller == caller, IdempotencyRecord.key == key
            )
        )
    ).scalar_one_or_none()
    if record is None:
        return None
    if record.expires_at > clock.now() and record.state == "done" and record.status_code:
        return record
    await session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.id == record.id, IdempotencyRecord.created_at == record.created_at
        )
    )
    return None


def _count(request: Request, outcome: str, status: int) -> None:
    route = route_template(request.scope)
    IDEMPOTENCY.labels(request.method, route, outcome).inc()
    log.info(
        "idempotency",
        extra={"outcome": outcome, "method": request.method, "route": route, "status": status},
    )


def _refuse(request: Request, code: str) -> AppError:
    error = AppError(code)
    _count(request, code.removeprefix("idempotency_"), error.status)
    return error


async def _before(ctx: _Context) -> None:
    """Step 1, after every dependency and before the endpoint: replay, refuse, or note what
    to keep."""
    request = ctx.request
    key = request.headers.get(HEADER)
    if key is None:
        return
    if not _KEY.match(key):
        raise _refuse(request, "idempotency_key_invalid")
    session: AsyncSession | None = getattr(request.state, "db_session", None)
    if session is None:  # an endpoint without the database keeps nothing
        return
    # A body the endpoint does not take is no part of what it does, and is never read here:
    # the one FastAPI read for the endpoint is already in memory.
    request_hash = _request_hash(request, await request.body() if ctx.reads_body else b"")
    if ctx.mode is Mode.CALLER:
        caller: str | None = getattr(request.state, "idempotency_caller", None)
        if caller is None:
            return
        record = await _lookup(session, caller, key)
    else:
        settings: Settings = request.app.state.settings
        factory: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        address = client_address(request, settings)
        await throttle_address(
            factory,
            settings,
            action="idempotency",
            address=address,
            limit=settings.idempotency_anonymous_per_address,
            window_seconds=settings.idempotency_anonymous_window_seconds,
        )
        caller = "anonymous:" + request_hash
        # Apart from the request's session: the endpoint may open a transaction of its own
        # (a throttle) before its first query, which on SQLite needs the one connection free.
        async with separate_transaction(
            factory, why="look up an anonymous answer before the endpoint runs"
        ) as lookup_session:
            record = await _lookup(lookup_session, caller, key)
    if record is not None:
        if record.request_hash != request_hash:
            raise _refuse(request, "idempotency_key_reused")
        raise _Replay(record)
    ctx.pending = _Pending(session=session, caller=caller, key=key, request_hash=request_hash)


def _keyed(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The endpoint, preceded by step 1 when its route handler set a context.  The signature
    stays the endpoint's (functools.wraps), so FastAPI resolves the same dependencies."""

    @functools.wraps(endpoint)
    async def keyed(*args: Any, **kwargs: Any) -> Any:
        ctx = _current.get()
        if ctx is not None and ctx.request.method == "POST":
            await _before(ctx)
        return await endpoint(*args, **kwargs)

    return keyed


def _replayed(request: Request, record: IdempotencyRecord, outcome: str) -> Response:
    assert record.status_code is not None
    headers = dict(record.headers or {})
    headers["Idempotent-Replayed"] = "true"
    _count(request, outcome, record.status_code)
    return Response(content=record.body or b"", status_code=record.status_code, headers=headers)


async def _twin_answer(request: Request, pending: _Pending) -> Response | None:
    """After this request's work was refused or lost a race: roll it back, and answer what a
    concurrent twin with the same key committed, if one did."""
    try:
        await pending.session.rollback()
        record = await _lookup(pending.session, pending.caller, pending.key)
    except Exception:
        log.debug("no twin answer could be read", exc_info=True)
        return None
    if record is None:
        return None
    if record.request_hash != pending.request_hash:
        raise _refuse(request, "idempotency_key_reused")
    return _replayed(request, record, "replayed_twin")


def _keepable(response: Response) -> bool:
    if isinstance(response, StreamingResponse) or not 200 <= response.status_code < 300:
        return False
    if "no-store" in response.headers.get("cache-control", "").lower():
        return False
    return isinstance(getattr(response, "body", None), bytes)


async def _keep(request: Request, pending: _Pending, response: Response) -> Response:
    """Step 2: the answer joins the work's transaction, which DbSession commits next."""
    if not _keepable(response):
        return response
    try:
        # The work's own pending changes first, so that their errors stay theirs.
        await pending.session.flush()
    except IntegrityError:
        twin = await _twin_answer(request, pending)
        if twin is None:
            raise
        return twin
    settings: Settings = request.app.state.settings
    pending.session.add(
        IdempotencyRecord(
            caller=pending.caller,
            key=pending.key,
            request_hash=pending.request_hash,
            state="done",
            status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k in _REPLAYED_HEADERS},
            body=bytes(response.body),
            expires_at=clock.now() + timedelta(seconds=settings.idempotency_ttl_seconds),
        )
    )
    try:
        await pending.session.flush()
    except IntegrityError:
        # A twin with the same key committed first: its answer, and this work undone.
        twin = await _twin_answer(request, pending)
        if twin is None:
            raise _refuse(request, "idempotency_in_flight") from None
        return twin
    _count(request, "stored", response.status_code)
    return response


def _authenticated(dependant: Dependant) -> bool:
    todo = [dependant]
    while todo:
        current = todo.pop()
        if isinstance(current.call, SecurityBase):
            return True
        todo.extend(current.dependencies)
    return False


class IdempotentRoute(APIRoute):
    """An API route that honours `Idempotency-Key` on POST where it can keep its promise:
    authenticated endpoints (per caller) and those that opt in with `replays_anonymous`,
    with a JSON body or none (a form, or a body the endpoint streams itself, is not kept)."""

    idempotency: Mode | None = None

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        anonymous = bool(getattr(endpoint, _ANONYMOUS_ATTR, False))
        methods = {m.upper() for m in kwargs.get("methods") or ()}
        wrap = "POST" in methods and inspect.iscoroutinefunction(endpoint)
        super().__init__(path, _keyed(endpoint) if wrap else endpoint, **kwargs)
        if not wrap:
            return
        if self.body_field is not None and isinstance(self.body_field.field_info, params.Form):
            return
        if self.openapi_extra and "requestBody" in self.openapi_extra:
            return
        if _authenticated(self.dependant):
            self.idempotency = Mode.CALLER
        elif anonymous:
            self.idempotency = Mode.ANONYMOUS
        else:
            return
        extra = dict(self.openapi_extra or {})
        extra["parameters"] = [*extra.get("parameters", []), _openapi_parameter(self.idempotency)]
        self.openapi_extra = extra

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        route = self

        async def idempotent_handler(request: Request) -> Response:
            mode = route.idempotency
            if mode is None or HEADER not in request.headers:
                response: Response = await handler(request)
                return response
            ctx = _Context(request=request, mode=mode, reads_body=route.body_field is not None)
            token = _current.set(ctx)
            try:
                try:
                    response = await handler(request)
                except _Replay as replay:
                    return _replayed(request, replay.record, "replayed")
                except (AppError, IntegrityError):
                    if ctx.pending is None:
                        raise
                    twin = await _twin_answer(request, ctx.pending)
                    if twin is None:
                        raise
                    return twin
                if ctx.pending is None:
                    return response
                return await _keep(request, ctx.pending, response)
            finally:
                _current.reset(token)

        return idempotent_handler


def _openapi_parameter(mode: Mode) -> dict[str, Any]:
    scope = (
        "this session (a signed-out session replays nothing) or this client"
        if mode is Mode.CALLER
        else "this very request (same key and same body), under a per-address limit"
    )
    return {
        "name": HEADER,
        "in": "header",
        "required": False,
        "description": (
            "Retry safely: a successful (2xx) answer is kept with the work it did, for "
            f"24 h, for {scope}, and replayed with `Idempotent-Replayed: true`; the same key "
            "with another request is 422 `idempotency_key_reused`. Error answers are not "
            "kept: the retry runs again."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": KEY_PATTERN},
    }
