"""WeChat API failures as problems with stable codes; WeChat's own errcode never leaks out.

Every exception keeps the `errcode` it came from (for the worker's records and the logs),
but the problem shown to a caller carries only our code and text.
"""

from __future__ import annotations

from typing import Any

from app.core.errors import AppError, register_codes

register_codes(
    {
        "wechat_code_invalid": (
            401,
            "微信登录凭证无效或已使用，请重新登录",
            "The WeChat login code is invalid or already used; call wx.login again",
        ),
        "wechat_rate_limited": (
            429,
            "微信接口调用过于频繁，请稍后再试",
            "WeChat is rate limiting us; try again later",
        ),
        "wechat_unavailable": (
            503,
            "微信服务暂不可用，请稍后再试",
            "WeChat is unavailable at the moment; try again later",
        ),
        "wechat_user_blocked": (
            403,
            "该微信用户存在风险，暂不能登录",
            "WeChat refused this user (high risk); sign-in is blocked",
        ),
    }
)

# errcodes (WeChat's documentation, "全局返回码")
CODE_SYSTEM_BUSY = -1
CODE_INVALID_CREDENTIAL = 40001  # access token invalid or not the latest
CODE_INVALID_CODE = 40029
CODE_CODE_USED = 40163
CODE_API_FREQ_LIMIT = 45011
CODE_HIGH_RISK_USER = 40226
CODE_NOT_SUBSCRIBED = 43101
CODE_INVALID_APPID = 40013
CODE_INVALID_SECRET = 40125
CODE_INVALID_OPENID = 40003
CODE_INVALID_TEMPLATE = 40037
CODE_ARGUMENT_INVALID = 47003
CODE_MISSING_TOKEN = 41001


class WechatError(AppError):
    """A failed WeChat call.  `errcode` is WeChat's code (None for transport failures and
    HTTP 5xx), kept for logs and delivery records, never shown to callers."""

    code = "wechat_unavailable"

    def __init__(self, errcode: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.errcode = errcode

    @property
    def transient(self) -> bool:
        """Worth trying again later."""
        return False


class WechatCodeInvalid(WechatError):
    code = "wechat_code_invalid"

    def __init__(self, errcode: int | None = None) -> None:
        super().__init__(errcode, headers={"WWW-Authenticate": 'Bearer realm="quyu"'})


class WechatRateLimited(WechatError):
    code = "wechat_rate_limited"

    def __init__(self, errcode: int | None = CODE_API_FREQ_LIMIT, retry_after: int = 60) -> None:
        super().__init__(errcode, headers={"Retry-After": str(retry_after)})

    @property
    def transient(self) -> bool:
        return True


class WechatUnavailable(WechatError):
    """System busy (-1), HTTP 5xx, timeouts, or repeated token failures."""

    code = "wechat_unavailable"

    def __init__(self, errcode: int | None = None) -> None:
        super().__init__(errcode, headers={"Retry-After": "5"})

    @property
    def transient(self) -> bool:
        return True


class WechatUserBlocked(WechatError):
    code = "wechat_user_blocked"


class WechatNotSubscribed(WechatError):
    """43101: the member has not (or no longer) accepted this template; not retried."""

    code = "wechat_unavailable"


class WechatRejected(WechatError):
    """Any other errcode: a configuration or request problem on our side, not retried."""

    code = "wechat_unavailable"


__all__ = [
    "WechatCodeInvalid",
    "WechatError",
    "WechatNotSubscribed",
    "WechatRateLimited",
    "WechatRejected",
    "WechatUnavailable",
    "WechatUserBlocked",
]
