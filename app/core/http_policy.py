"""Pure ASGI middleware for what every answer owes the client: security headers, and the host
allow-list.

* `X-Content-Type-Options: nosniff` on every response, error answers of the middleware
  included (this middleware is the outermost one).
* `Cache-Control: no-store` on every response to a request that carried credentials
  (`Authorization`): personal data must not stay in a shared or browser cache.  Token
  answers set it themselves, since a sign-in carries no `Authorization` header.
* A request whose `Host` is not in the allow-list (`Settings.hosts`) is refused with 400
  `host_not_allowed` before any work, so that no answer is built for a forged host.  The
  liveness and readiness probes are exempt: the kubelet and the image's health check address
  the pod by its IP, and both answers are constant.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_body, send_problem

PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authenticated = "authorization" in Headers(scope=scope)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A copy: inner middleware keep the message they sent (the idempotency store
                # reads its headers afterwards) and must not see these.
                message = {**message, "headers": list(message.get("headers", []))}
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if authenticated:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_wrapper)


def host_name(header: str) -> str:
    """The host of a `Host` header, without the port, lower case ("[::1]:8000" -> "::1")."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    if not host:
        return False
    for pattern in patterns:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class AllowedHostsMiddleware:
    def __init__(self, app: ASGIApp, *, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = tuple(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host", ""))
        if host_allowed(host, self.hosts):
            await self.app(scope, receive, send)
            return
        await send_problem(send, 400, problem_body("host_not_allowed", 400))
