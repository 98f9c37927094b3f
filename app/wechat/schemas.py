"""The shapes that cross HTTP for `/auth/wechat*` and `/me/wechat`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# wx.login and getPhoneNumber codes are short opaque strings (32 characters in practice).
WechatCode = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._\-]+$")
]
BindToken = Annotated[
    str, StringConstraints(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")
]


class WechatLoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: WechatCode = Field(description="The code from `wx.login` (valid once, 5 minutes)")


class WechatBindIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bind_token: BindToken = Field(description="From `POST /auth/wechat` (`bind_required`)")
    phone_code: WechatCode = Field(description="The code from the `getPhoneNumber` button")


class WechatTokens(BaseModel):
    """Signed in: the same tokens as `POST /auth/token` gives for a password."""

    bind_required: Literal[False]
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Lifetime of the access token in seconds")
    refresh_token: str


class WechatBindRequired(BaseModel):
    """This WeChat user is not bound to an account yet: ask for the phone number
    (`getPhoneNumber`) and call `POST /auth/wechat/bind`."""

    bind_required: Literal[True]
    bind_token: str = Field(description="Single use; pass it to `POST /auth/wechat/bind`")
    expires_in: int = Field(description="Seconds the bind token stays valid")


class WechatBound(WechatTokens):
    account_created: bool = Field(
        description="True when no account had this phone number and a member account was made"
    )
