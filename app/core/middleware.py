"""Pure ASGI middleware: request context (id, language, access log, metrics, last-resort
500) and conditional GETs (ETag / If-None-Match).  `Idempotency-Key` is answered in the route
layer, after authentication (app/idempotency.py)."""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import (
    database_unavailable,
    disk_fault,
    problem_body,
    send_problem,
    storage_failed,
)
from app.core.i18n import current_lang, negotiate
from app.core.logging import request_id_var
from app.core.metrics import LATENCY, REQUESTS
from app.db.faults import is_unavailable

access_log = logging.getLogger("quyu.access")
error_log = logging.getLogger("quyu.errors")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def route_template(scope: Scope) -> str:
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
                    await send_problem(
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
                    await send_problem(
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
                await send_problem(
                    send,
                    500,
                    problem_body("internal_error", 500),
                    [(b"x-request-id", request_id.encode())],
                )
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
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
