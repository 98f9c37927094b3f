"""`quyu fake-wechat`: a local stand-in for the four WeChat endpoints we call, with their real
field names and error codes, so that the mini-program can be developed (and the tests run)
without WeChat.

Codes for `wx.login` (`js_code`) and `getPhoneNumber` (`code`):
- any code works once; the same code again answers 40163 (code been used);
- the part before the first "." names the WeChat user: `alice.1` and `alice.2` are two
  logins of the same person (same openid);
- a phone code that starts with 11 digits gives that number (`13812345678.1`); any other
  phone code gives a made-up 139… number of its own;
- prefixes that trigger WeChat's errors: `bad-` 40029 (invalid code), `used-` 40163 (code
  been used), `busy-` -1 (system busy), `limit-` 45011 (frequency limit), `risky-` 40226
  (high-risk user), `down-` HTTP 502.

`GET /__fake__/messages` lists the subscribe messages received.  `--send-delay SECONDS` makes
it answer each subscribe message that much later (received at once, answered after): a slow
WeChat, to see what a worker stopped mid-send does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.integrations.wechat.fields import LIMITS, field_type

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40013: "invalid appid",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    40226: "high risk user",
    41001: "access_token missing",
    41008: "missing code",
    42001: "access_token expired",
    43101: "user refuse to accept the msg",
    45011: "api minute-quota reach limit mustslower retry next minute",
    47003: "argument invalid!",
}

_PREFIX_ERRORS = {"bad-": 40029, "used-": 40163, "busy-": -1, "limit-": 45011, "risky-": 40226}
_PHONE = re.compile(r"^(1\d{10})(?:\.|$)")

PATH_SESSION = "/sns/jscode2session"
PATH_TOKEN = "/cgi-bin/stable_token"  # noqa: S105  (a path, not a secret)
PATH_PHONE = "/wxa/business/getuserphonenumber"
PATH_SEND = "/cgi-bin/message/subscribe/send"


@dataclass
class Failure:
    errcode: int | None = None
    http_status: int | None = None


@dataclass
class FakeWechatState:
    """Everything the stand-in remembers; safe to inspect from another thread."""

    app_id: str
    secret: str
    token_ttl: int = 7200
    lock: threading.Lock = field(default_factory=threading.Lock)
    used_codes: set[str] = field(default_factory=set)
    openids: set[str] = field(default_factory=set)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires (epoch)
    current_token: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: dict[str, list[Failure]] = field(default_factory=lambda: defaultdict(list))
    unsubscribed: set[str] = field(default_factory=set)
    # Seconds a subscribe message takes to be answered, after it is received: a slow WeChat,
    # for tests that stop a worker while a send is in flight.
    send_delay: float = 0.0

    def fail_next(
        self,
        path: str,
        *,
        errcode: int | None = None,
        http_status: int | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `path` fail with `errcode` (or HTTP `http_status`)."""
        with self.lock:
            self.failures[path].extend(
                Failure(errcode=errcode, http_status=http_status) for _ in range(times)
            )

    def invalidate_tokens(self) -> None:
        """Every access token issued so far stops working (WeChat answers 40001)."""
        with self.lock:
            self.tokens.clear()
            self.current_token = None

    def openid_for(self, user: str) -> str:
        digest = hashlib.sha256(f"{self.app_id}:{user}".encode()).digest()
        return "o" + base64.urlsafe_b64encode(digest).decode().rstrip("=")[:27]

    def reset(self) -> None:
        with self.lock:
            self.used_codes.clear()
            self.tokens.clear()
            self.current_token = None
            self.messages.clear()
            self.calls.clear()
            self.failures.clear()
            self.unsubscribed.clear()
            self.send_delay = 0.0

    def _scripted(self, path: str) -> Failure | None:
        queue = self.failures.get(path)
        return queue.pop(0) if queue else None


def _error(errcode: int) -> JSONResponse:
    return JSONResponse({"errcode": errcode, "errmsg": ERRMSG.get(errcode, "error")})


def _ok(**fields: Any) -> JSONResponse:
    return JSONResponse({"errcode": 0, "errmsg": "ok", **fields})


def _code_error(code: str) -> Failure | None:
    if code.startswith("down-"):
        return Failure(http_status=502)
    for prefix, errcode in _PREFIX_ERRORS.items():
        if code.startswith(prefix):
            return Failure(errcode=errcode)
    return None


def _failure_response(failure: Failure) -> Response:
    if failure.http_status is not None:
        return Response("Bad Gateway", status_code=failure.http_status)
    assert failure.errcode is not None
    return _error(failure.errcode)


def create_fake_app(state: FakeWechatState) -> Starlette:
    def check_token(request: Request) -> Response | None:
        token = request.query_params.get("access_token")
        if not token:
            return _error(41001)
        expires = state.tokens.get(token)
        if expires is None:
            return _error(40001)
        if expires < time.time():
            return _error(42001)
        return None

    def use_code(code: str, namespace: str) -> Failure | None:
        """Prefix errors, then single use."""
        failure = _code_error(code)
        if failure is not None:
            return failure
        if namespace + code in state.used_codes:
            return Failure(errcode=40163)
        state.used_codes.add(namespace + code)
        return None

    async def jscode2session(request: Request) -> Response:
        q = request.query_params
        with state.lock:
            state.calls[PATH_SESSION] += 1
            if (failure := state._scripted(PATH_SESSION)) is not None:
                return _failure_response(failure)
            if q.get("appid") != state.app_id:
                return _error(40013)
            if q.get("secret") != state.secret:
                return _error(40125)
            if q.get("grant_type") != "authorization_code":
                return _error(47003)
            code = q.get("js_code") or ""
            if not code:
                return _error(41008)
            if (failure := use_code(code, "login:")) is not None:
                return _failure_response(failure)
            user = code.split(".", 1)[0]
            openid = state.openid_for(user)
            state.openids.add(openid)
        session_key = base64.b64encode(secrets.token_bytes(16)).decode()
        unionid = "u" + openid[1:]
        # Real WeChat leaves errcode out of a successful answer.
        return JSONResponse({"openid": openid, "session_key": session_key, "unionid": unionid})

    async def stable_token(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(47003)
        with state.lock:
            state.calls[PATH_TOKEN] += 1
            if (failure := state._scripted(PATH_TOKEN)) is not None:
                return _failure_response(failure)
            if body.get("grant_type") != "client_credential":
                return _error(47003)
            if body.get("appid") != state.app_id:
                return _error(40013)
            if body.get("secret") != state.secret:
                return _error(40125)
            now = time.time()
            current = state.current_token
            remaining = state.tokens.get(current, 0.0) - now if current else 0.0
            if body.get("force_refresh") is True or remaining <= 300:
                if body.get("force_refresh") is True:
                    state.tokens.clear()  # forcing makes the earlier token invalid
                current = "fake-at-" + secrets.token_urlsafe(24)
                state.tokens[current] = now + state.token_ttl
                state.current_token = current
                remaining = float(state.token_ttl)
        # Real WeChat answers without errcode here too.
        return JSONResponse({"access_token": current, "expires_in": int(remaining)})

    async def getuserphonenumber(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(47003)
        with state.lock:
            state.calls[PATH_PHONE] += 1
            if (failure := state._scripted(PATH_PHONE)) is not None:
                return _failure_response(failure)
            if (refused := check_token(request)) is not None:
                return refused
            code = body.get("code")
            if not isinstance(code, str) or not code:
                return _error(47003)
            if (failure := use_code(code, "phone:")) is not None:
                return _failure_response(failure)
        match = _PHONE.match(code)
        if match:
            phone = match.group(1)
        else:
            digits = int(hashlib.sha256(code.encode()).hexdigest(), 16) % 10**8
            phone = f"139{digits:08d}"
        return _ok(
            phone_info={
                "phoneNumber": phone,
                "purePhoneNumber": phone,
                "countryCode": "86",
                "watermark": {"timestamp": int(time.time()), "appid": state.app_id},
            }
        )

    async def subscribe_send(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(47003)
        with state.lock:
            state.calls[PATH_SEND] += 1
            if (failure := state._scripted(PATH_SEND)) is not None:
                return _failure_response(failure)
            if (refused := check_token(request)) is not None:
                return refused
            touser = body.get("touser")
            if touser not in state.openids:
                return _error(40003)
            if not body.get("template_id"):
                return _error(40037)
            data = body.get("data")
            if not isinstance(data, dict) or not data:
                return _error(47003)
            for key, item in data.items():
                value = item.get("value") if isinstance(item, dict) else None
                limit = LIMITS.get(field_type(key))
                if not isinstance(value, str) or not value or (limit and len(value) > limit):
                    return JSONResponse(
                        {"errcode": 47003, "errmsg": f"argument invalid! data.{key}.value"}
                    )
            if touser in state.unsubscribed:
                return _error(43101)
            state.messages.append(body)
            delay = state.send_delay
        if delay > 0:
            await asyncio.sleep(delay)
        return _ok(msgid=secrets.randbelow(10**12))

    async def messages(request: Request) -> Response:
        with state.lock:
            return JSONResponse(list(state.messages))

    return Starlette(
        routes=[
            Route(PATH_SESSION, jscode2session, methods=["GET"]),
            Route(PATH_TOKEN, stable_token, methods=["POST"]),
            Route(PATH_PHONE, getuserphonenumber, methods=["POST"]),
            Route(PATH_SEND, subscribe_send, methods=["POST"]),
            Route("/__fake__/messages", messages, methods=["GET"]),
        ]
    )
