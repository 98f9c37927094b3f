"""Bounded, well-formed input before anything parses or authenticates a request.

`InputLimitsMiddleware` is a pure ASGI middleware that wraps `receive`:

* Size.  A multipart body sent to an upload endpoint (a path matching `upload_paths`) may
  hold `upload_limit` bytes, any other body `body_limit`.  A `Content-Length` above the limit
  is answered 413 at once, without reading a byte; a body without one (chunked) is counted as
  it arrives and answered 413 as soon as it passes the limit.  Any body but an upload is read
  here, up to its limit, before the app is called: so nothing (not a token check, not a JSON
  parser) works on a body that is too big.  An upload is handed on as it streams, counted;
  passing the limit ends the request with 413 (`upload_code`) whatever the app was doing with
  it.  The form fields of an upload are not looked at here: the upload endpoint reads its
  file part only, and cleans the file name.
* Characters.  The path, the query string (percent-decoded), a JSON body and a form body are
  refused with 422 `control_character` when a string in them holds a C0 control character
  other than tab, LF and CR, or an unpaired surrogate (app/core/text.py); the `errors` list
  names the fields.  Unescaped control characters are invalid JSON already, so a JSON body is
  decoded and walked only when it holds a `\\u` escape (or NUL bytes: UTF-16 or UTF-32): the
  common request costs two byte searches.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_body, send_problem
from app.core.i18n import current_lang
from app.core.text import has_refused, refused_in


class BodyTooLarge(HTTPException):
    """Raised from `receive` when an upload passes its limit; whatever the app makes of it,
    the middleware answers 413."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    # A 413 leaves the rest of the body unread: the client must not send it on this
    # connection.
    await send_problem(send, status, body, [(b"connection", b"close")] if status == 413 else [])


def _query_fields(query: bytes) -> list[str]:
    if not query:
        return []
    fields: list[str] = []
    for name, value in parse_qsl(
        query.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace"
    ):
        # Query values are single-line everywhere: no tab or line break either.
        if has_refused(name) or has_refused(value) or any(c in value for c in "\t\r\n"):
            fields.append(name if not has_refused(name) else "query")
    return fields


def _body_fields(media_type: str, body: bytes) -> list[str]:
    if media_type == "application/json" or media_type.endswith("+json"):
        # A UTF-16 or UTF-32 body (which JSON parsers accept too) has NUL bytes in it.
        if b"\\u" not in body and b"\x00" not in body:
            return []
        try:
            decoded = json.loads(body)
        except ValueError:
            return []  # the app answers malformed JSON itself
        return [p or "body" for p in refused_in(decoded)]
    if media_type == "application/x-www-form-urlencoded":
        if b"%" not in body and not any(b < 0x20 for b in body):
            return []
        pairs = parse_qsl(
            body.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace"
        )
        return [
            name if not has_refused(name) else "body"
            for name, value in pairs
            if has_refused(name) or has_refused(value)
        ]
    return []


class InputLimitsMiddleware:
    """Bodies bounded while they stream, control characters refused: see the module."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_limit: int,
        upload_limit: int,
        upload_paths: re.Pattern[str],
        upload_code: str = "payload_too_large",
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        self.upload_limit = upload_limit
        self.upload_paths = upload_paths
        self.upload_code = upload_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        media_type = _media_type(headers)
        upload = media_type == "multipart/form-data" and bool(
            self.upload_paths.fullmatch(scope.get("path", ""))
        )
        limit = self.upload_limit if upload else self.body_limit
        too_large = self.upload_code if upload else "payload_too_large"

        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _answer(send, 413, problem_body(too_large, 413))
            return

        fields: list[str] = []
        if has_refused(scope.get("path", "")):
            fields.append("path")
        fields += _query_fields(scope.get("query_string", b""))

        if upload:
            if fields:
                await _answer(send, 422, _control_problem(fields))
                return
            await self._stream(scope, receive, send, limit, too_large)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The client left mid-body.  Nobody reads this answer; it keeps the access
                # log and the metrics from counting the request as a server error.
                await _answer(send, 400, problem_body("malformed_body", 400))
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, problem_body("payload_too_large", 413))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        fields += _body_fields(media_type, body)
        if fields:
            await _answer(send, 422, _control_problem(fields))
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, limit: int, code: str
    ) -> None:
        size = 0
        exceeded = False
        started = False

        async def counted() -> Message:
            nonlocal size, exceeded
            if exceeded:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's own answer to the cut body is replaced by the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _answer(send, 413, problem_body(code, 413))


def _control_problem(fields: list[str]) -> dict[str, Any]:
    message = (
        "control characters are not allowed" if current_lang.get() == "en" else "不能含有控制字符"
    )
    errors = [{"field": field, "message": message} for field in fields]
    return problem_body("control_character", 422, errors=errors)
