"""OAuth 2.0 (RFC 6749) plumbing of the token endpoint: its error codes and error type, the
checks of the form-encoded request, and client authentication with HTTP Basic (§2.3.1)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from urllib.parse import unquote_plus

from app.core.errors import CATALOG, AppError, register_codes
from app.core.i18n import text

# RFC 6749 §5.2 error codes, used as problem codes as well.
register_codes(
    {
        "invalid_request": (
            400,
            "请求缺少必需的参数或格式有误",
            "The request is missing a parameter or is malformed",
        ),
        "invalid_grant": (
            400,
            "登录凭据无效、已过期或已被撤销",
            "The grant is invalid, expired or revoked",
        ),
        "invalid_client": (401, "客户端认证失败", "Client authentication failed"),
        "unsupported_grant_type": (400, "不支持的授权类型", "The grant type is not supported"),
        "invalid_scope": (400, "请求的权限范围无效", "The requested scope is not valid"),
    }
)

BASIC_CHALLENGE = 'Basic realm="quyu", charset="UTF-8"'
# The longest value of any form parameter.
FORM_VALUE_MAX = 2000


class OAuthError(AppError):
    """An RFC 6749 §5.2 error.  `error_description` must be ASCII, so it is always English;
    the problem `title` and `detail` follow the request's language."""

    def __init__(
        self,
        error: str,
        zh: str | None = None,
        en: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        _, catalog_zh, catalog_en = CATALOG[error]
        super().__init__(
            error, detail=text(zh or catalog_zh, en or catalog_en), status=status, headers=headers
        )
        self.error_description = en or catalog_en


def invalid_client() -> OAuthError:
    # Advertise the scheme we support; RFC 6749 requires it when Basic was used.
    return OAuthError("invalid_client", headers={"WWW-Authenticate": BASIC_CHALLENGE})


def missing(name: str) -> OAuthError:
    return OAuthError("invalid_request", f"缺少参数 {name}", f"The parameter {name} is required")


def check_form(fields: Mapping[str, Sequence[object]]) -> None:
    """Every parameter at most once (RFC 6749 §3.2), each a string of reasonable length.
    `fields` maps each name to all the values sent under it."""
    for key, values in fields.items():
        if len(values) > 1:
            raise OAuthError(
                "invalid_request", f"参数 {key} 重复", f"The parameter {key} is repeated"
            )
        if any(not isinstance(v, str) or len(v) > FORM_VALUE_MAX for v in values):
            raise OAuthError(
                "invalid_request", f"参数 {key} 无效", f"The parameter {key} is not valid"
            )


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """client_id and client_secret from an `Authorization: Basic` header, if one was sent."""
    if authorization is None:
        return None
    scheme, _, param = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_client() from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise invalid_client()
    return unquote_plus(client_id), unquote_plus(secret)
