"""RFC 9457 problem details with stable machine codes, rendered in zh-CN or English."""

from __future__ import annotations

import errno
import json
import logging
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import Send

from app.core.i18n import current_lang, negotiate
from app.db.faults import is_unavailable

logger = logging.getLogger("quyu.errors")
storage_log = logging.getLogger("quyu.storage")

PROBLEM_JSON = "application/problem+json"

# code -> (status, zh-CN title, English title)
CATALOG: dict[str, tuple[int, str, str]] = {
    "validation_error": (422, "请求参数有误", "The request is not valid"),
    # A control character (or an unpaired surrogate) in a string input (app/core/text.py).
    "control_character": (
        422,
        "输入中含有不允许的控制字符",
        "The input contains a control character that is not allowed",
    ),
    "not_found": (404, "资源不存在", "Not found"),
    "method_not_allowed": (405, "不支持该请求方法", "Method not allowed"),
    # A body that cannot be decoded at all (not UTF-8, a broken multipart stream).
    "malformed_body": (400, "请求体无法解析", "The request body cannot be decoded"),
    "bad_request": (400, "请求有误", "Bad request"),
    # The Host header names none of the hosts this service answers to (QUYU_ALLOWED_HOSTS).
    "host_not_allowed": (400, "请求的主机名无效", "The requested host is not served here"),
    "unauthorized": (401, "未登录或登录已失效", "Authentication required"),
    "token_invalid": (401, "访问令牌无效或已过期", "The access token is invalid or expired"),
    "forbidden": (403, "无权执行此操作", "You may not do this"),
    "members_only": (403, "仅限党员账号使用", "Only member accounts may do this"),
    "scope_missing": (403, "客户端缺少所需权限范围", "The client lacks the required scope"),
    "conflict": (409, "与当前状态冲突", "Conflicts with the current state"),
    "invalid_transition": (409, "当前状态不允许此操作", "Not allowed in the current state"),
    # Officers may not decide their own record (contributions, check-ins).
    "review_own_forbidden": (403, "不能审核本人的记录", "You may not review your own record"),
    "too_many_requests": (429, "请求过于频繁，请稍后再试", "Too many requests, try again later"),
    "idempotency_key_reused": (
        422,
        "该幂等键已用于另一个请求",
        "This Idempotency-Key was used with a different request",
    ),
    "idempotency_in_flight": (
        409,
        "相同幂等键的请求正在处理中",
        "A request with this Idempotency-Key is still in progress",
    ),
    "idempotency_key_invalid": (
        422,
        "幂等键格式无效",
        "The Idempotency-Key header is not valid",
    ),
    "phone_taken": (409, "该手机号已注册", "This phone number is already registered"),
    "id_number_taken": (
        409,
        "该身份证号已被其他账号使用",
        "This ID number belongs to another account",
    ),
    "org_has_children": (409, "该组织下仍有下级组织", "The organization still has children"),
    "officer_exists": (
        409,
        "该用户已是此组织的工作人员",
        "The user already serves this organization",
    ),
    "invalid_parent": (422, "上级组织无效", "The parent organization is not valid"),
    "precondition_failed": (412, "资源已被修改", "The resource has changed"),
    "not_acceptable": (406, "不支持的响应格式", "Not acceptable"),
    "unsupported_media_type": (415, "不支持的内容类型", "Unsupported media type"),
    "payload_too_large": (413, "请求体过大", "Request body too large"),
    "service_unavailable": (503, "服务暂不可用", "Service unavailable"),
    # The server's own disks (the evidence store, the temporary directory uploads go to):
    # never the client's fault, answered as the server's and logged for the operator.
    "storage_full": (
        507,
        "服务器存储空间不足，文件未保存，请稍后再试",
        "The server's storage is full; the file was not saved, try again later",
    ),
    "storage_unavailable": (
        503,
        "文件存储暂不可用，文件未保存，请稍后再试",
        "File storage is unavailable; the file was not saved, try again later",
    ),
    "internal_error": (500, "服务器内部错误", "Internal server error"),
}


def register_codes(codes: dict[str, tuple[int, str, str]]) -> None:
    """Domains add their own codes at import time; a code keeps one meaning forever."""
    for code, entry in codes.items():
        if code in CATALOG and CATALOG[code] != entry:
            raise ValueError(f"problem code {code!r} registered twice with different meanings")
        CATALOG[code] = entry


class AppError(Exception):
    """Raise with a catalogued `code`; `detail` and `extra` fields are optional."""

    code: str = "internal_error"

    def __init__(
        self,
        code: str | None = None,
        *,
        detail: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.code = code or type(self).code
        if self.code not in CATALOG:
            raise ValueError(f"unknown problem code {self.code!r}")
        self.status = status or CATALOG[self.code][0]
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.code)


class NotFound(AppError):
    code = "not_found"


class Forbidden(AppError):
    code = "forbidden"


class ReviewOwnForbidden(Forbidden):
    """An officer tried to decide a record of their own; someone else must."""

    code = "review_own_forbidden"


class Unauthorized(AppError):
    code = "unauthorized"

    def __init__(self, code: str | None = None, **kwargs: Any) -> None:
        headers = kwargs.pop("headers", None) or {}
        headers.setdefault("WWW-Authenticate", 'Bearer realm="quyu"')
        super().__init__(code, headers=headers, **kwargs)


class InvalidTransition(AppError):
    code = "invalid_transition"


class ValidationFailed(AppError):
    """422 with an `errors` list, for checks that cannot live in a schema."""

    code = "validation_error"

    def __init__(self, field: str, message: str, code: str | None = None) -> None:
        super().__init__(code, errors=[{"field": field, "message": message}])


# Seconds a client is asked to wait when the file store cannot be written.
STORAGE_RETRY_AFTER_SECONDS = 30


class StorageFull(AppError):
    """507: a disk of the server has no room (or quota) left for the file."""

    code = "storage_full"


class StorageUnavailable(AppError):
    """503 with Retry-After: a disk of the server cannot be written (read-only, I/O error,
    permissions, an object store that does not answer)."""

    code = "storage_unavailable"

    def __init__(self, code: str | None = None, **kwargs: Any) -> None:
        headers = kwargs.pop("headers", None) or {}
        headers.setdefault("Retry-After", str(STORAGE_RETRY_AFTER_SECONDS))
        super().__init__(code, headers=headers, **kwargs)


# errno values that say "no room": the file system, a quota, the largest file it takes.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# errno values that only a disk gives, for telling a disk's error from any other OSError
# where the code that failed is not known (a framework spooling a form to a temporary file).
_DISK_ONLY = _DISK_FULL | {errno.EROFS, errno.EIO}


def disk_fault(exc: BaseException) -> OSError | None:
    """The OSError of a full, read-only or failing disk in `exc` or what caused it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_ONLY:
            return current
        current = current.__cause__ or current.__context__
    return None


def storage_failed(
    exc: BaseException,
    where: str,
    *,
    full: bool | None = None,
    reason: str | None = None,
) -> AppError:
    """The problem to answer for `exc`, met while writing a file at `where` ("upload spool",
    "store", "s3", …), logged as one error line for the operator: the error's type, errno
    and the system's text (or `reason`), no path, no traceback, no personal data.

    A full disk or quota (`full`, by default read from an OSError's errno) is 507
    `storage_full`; anything else (read-only, I/O error, permissions, a missing directory, a
    store that does not answer) is 503 `storage_unavailable` with Retry-After."""
    if full is None:
        full = isinstance(exc, OSError) and exc.errno in _DISK_FULL
    extra: dict[str, Any] = {"where": where, "error_type": type(exc).__name__}
    if isinstance(exc, OSError) and exc.errno is not None:
        extra["errno"] = errno.errorcode.get(exc.errno, str(exc.errno))
        extra["reason"] = exc.strerror
    if reason is not None:
        extra["reason"] = reason
    storage_log.error("storage full" if full else "storage unavailable", extra=extra)
    return StorageFull() if full else StorageUnavailable()


def title_for(code: str) -> str:
    _, zh, en = CATALOG.get(code, CATALOG["internal_error"])
    return en if current_lang.get() == "en" else zh


def problem_body(code: str, status: int, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    title = title_for(code)
    body: dict[str, Any] = {
        "type": f"urn:quyu:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }
    body.update(extra)
    return body


async def send_problem(
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer a problem straight from an ASGI middleware (before or around the app, where no
    exception handler runs)."""
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


def problem_response(
    code: str,
    status: int | None = None,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    status = status or CATALOG[code][0]
    return JSONResponse(
        problem_body(code, status, detail, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


# Pydantic error types with a zh-CN rendering; anything else falls back to pydantic's text.
_ZH_MESSAGES: dict[str, str] = {
    "missing": "必填项",
    "extra_forbidden": "不允许的字段",
    "string_too_long": "内容过长",
    "string_too_short": "内容过短",
    "string_type": "应为字符串",
    "int_parsing": "应为整数",
    "int_type": "应为整数",
    "float_parsing": "应为数字",
    "float_type": "应为数字",
    "bool_parsing": "应为布尔值",
    "bool_type": "应为布尔值",
    "enum": "取值不在允许范围内",
    "literal_error": "取值不在允许范围内",
    "date_from_datetime_parsing": "日期格式应为 YYYY-MM-DD",
    "date_parsing": "日期格式应为 YYYY-MM-DD",
    "date_type": "日期格式应为 YYYY-MM-DD",
    "datetime_parsing": "时间格式应为 RFC 3339",
    "datetime_type": "时间格式应为 RFC 3339",
    "uuid_parsing": "应为有效的 ID",
    "uuid_type": "应为有效的 ID",
    "greater_than": "数值过小",
    "greater_than_equal": "数值过小",
    "less_than": "数值过大",
    "less_than_equal": "数值过大",
    "too_long": "条目过多",
    "too_short": "条目过少",
    "list_type": "应为列表",
    "model_type": "应为对象",
    "dict_type": "应为对象",
    "json_invalid": "JSON 格式错误",
    "value_error": "取值无效",
    "string_pattern_mismatch": "格式不正确",
    "date_out_of_range": "日期超出允许范围",
    "control_character": "应为单行文本，不能含有制表符、换行或控制字符",
}


_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie", "form"})


def _field_name(loc: tuple[Any, ...]) -> str:
    """`("body", "location", "lat")` → "location.lat": only the leading part names where the
    value came from; a field that happens to be called "path" or "body" keeps its name."""
    parts = list(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    return ".".join(str(p) for p in parts) or "body"


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    english = current_lang.get() == "en"
    out: list[dict[str, str]] = []
    for err in exc.errors():
        message = str(err.get("msg", ""))
        if err.get("type") == "value_error" and message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        elif not english:
            message = _ZH_MESSAGES.get(str(err.get("type")), message)
        out.append({"field": _field_name(tuple(err.get("loc", ()))), "message": message})
    return out


# Seconds a client is asked to wait when the database is away (as /readyz says).
RETRY_AFTER_SECONDS = 5


def database_unavailable(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Log `exc`, which `is_unavailable` accepted, as one warning line (its type names, no
    message: a driver's text may quote data) and give the 503 problem's status, body and
    headers."""
    root = exc
    while isinstance(getattr(root, "orig", None), BaseException):
        root = root.orig  # type: ignore[attr-defined]
    logger.warning(
        "database unavailable",
        extra={"error_type": type(exc).__name__, "cause_type": type(root).__name__},
    )
    return (
        503,
        problem_body("service_unavailable", 503),
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path is served with.  The router answers 405 from the first
    route whose path matched, which knows only its own method; a path served by several
    routes (GET and PATCH /me) must list them all in `Allow`."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        template, route_methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(template, str) and route_methods and _path_regex(template).match(path):
            methods.update(route_methods)
    return sorted(methods)


@lru_cache(maxsize=1024)
def _path_regex(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem_response(exc.code, exc.status, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        controls = bool(errors) and all(e.get("type") == "control_character" for e in errors)
        code = "control_character" if controls else "validation_error"
        return problem_response(code, 422, errors=validation_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        fault = disk_fault(exc) if exc.status_code == 400 else None
        if fault is not None:
            # FastAPI answers 400 for any failure while parsing a form, a full temporary
            # directory (where files of a multipart form are spooled) included: the server's.
            error = storage_failed(fault, "form spool")
            return problem_response(error.code, error.status, headers=error.headers)
        code = {
            400: "malformed_body",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            406: "not_acceptable",
            413: "payload_too_large",
            415: "unsupported_media_type",
            429: "too_many_requests",
            409: "conflict",
            503: "service_unavailable",
        }.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "bad_request")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        if exc.status_code == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="quyu"')
        return problem_response(code, exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        if is_unavailable(exc):
            status, body, headers = database_unavailable(exc)
            return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)
        fault = disk_fault(exc)
        if fault is not None:
            error = storage_failed(fault, "request")
            return problem_response(error.code, error.status, headers=error.headers)
        logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
        return problem_response("internal_error", 500)


__all__ = [
    "PROBLEM_JSON",
    "AppError",
    "Forbidden",
    "InvalidTransition",
    "NotFound",
    "ReviewOwnForbidden",
    "StorageFull",
    "StorageUnavailable",
    "Unauthorized",
    "ValidationFailed",
    "disk_fault",
    "install_error_handlers",
    "negotiate",
    "problem_response",
    "register_codes",
    "storage_failed",
]
