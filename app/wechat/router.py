"""`/auth/wechat`, `/auth/wechat/bind`, `/me/wechat`: HTTP only; rules in `app.wechat.service`
(which also calls WeChat, never while a transaction is open).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse

from app.authz.guards import CurrentMember
from app.core.openapi import problems
from app.deps import AppSettings, DbSession, SessionFactory, client_address
from app.idempotency import IdempotentRoute
from app.identity.sessions import device_label
from app.integrations.wechat.client import WechatClient
from app.wechat import service
from app.wechat.schemas import (
    WechatBindIn,
    WechatBindRequired,
    WechatBound,
    WechatLoginIn,
    WechatTokens,
)

router = APIRouter(route_class=IdempotentRoute)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def get_wechat(request: Request) -> WechatClient:
    client: WechatClient = request.app.state.wechat
    return client


Wechat = Annotated[WechatClient, Depends(get_wechat)]


@router.post(
    "/auth/wechat",
    tags=["auth"],
    response_model=WechatTokens | WechatBindRequired,
    responses=problems(401, 403, 422, 429, 503),
    summary="Sign in with a wx.login code",
    description=(
        "Trades the `wx.login` code for the WeChat user. When that user is bound to an "
        "account: tokens (`bind_required: false`). Otherwise `bind_required: true` with a "
        "short-lived, single-use `bind_token` for `POST /auth/wechat/bind`. "
        "401 `wechat_code_invalid` for a bad or used code; 403 `wechat_user_blocked` when "
        "WeChat flags the user; 429 `too_many_requests` (with Retry-After) past the attempts "
        "allowed per client address; 429 and 503 `wechat_unavailable` when WeChat is busy or "
        "down."
    ),
)
async def auth_wechat(
    body: WechatLoginIn,
    request: Request,
    db: DbSession,
    factory: SessionFactory,
    wechat: Wechat,
    settings: AppSettings,
) -> Response:
    result = await service.sign_in(
        db,
        factory,
        wechat,
        body.code,
        settings=settings,
        address=client_address(request, settings),
        device=device_label(request.headers.get("user-agent")),
    )
    out: WechatTokens | WechatBindRequired
    if isinstance(result, service.BindTicket):
        out = WechatBindRequired(
            bind_required=True, bind_token=result.bind_token, expires_in=result.expires_in
        )
    else:
        assert result.refresh_token is not None
        out = WechatTokens(
            bind_required=False,
            access_token=result.access_token,
            expires_in=result.expires_in,
            refresh_token=result.refresh_token,
        )
    return JSONResponse(out.model_dump(mode="json"), headers=_NO_STORE)


@router.post(
    "/auth/wechat/bind",
    tags=["auth"],
    response_model=WechatBound,
    responses=problems(401, 403, 409, 422, 429, 503),
    summary="Bind the WeChat user to the account of its phone number, and sign in",
    description=(
        "With the `bind_token` from `POST /auth/wechat` and the code of the `getPhoneNumber` "
        "button: binds the WeChat user to the account with that phone number, creating a "
        "member account when there is none, and returns tokens. 401 "
        "`wechat_bind_token_invalid` (invalid, used or expired) or `wechat_code_invalid` "
        "(phone code); 409 `wechat_already_bound` when the account has another WeChat user; "
        "429 `too_many_requests` (with Retry-After) past the attempts allowed per client "
        "address."
    ),
)
async def auth_wechat_bind(
    body: WechatBindIn,
    request: Request,
    db: DbSession,
    factory: SessionFactory,
    wechat: Wechat,
    settings: AppSettings,
) -> Response:
    tokens, created = await service.bind(
        db,
        factory,
        wechat,
        bind_token=body.bind_token,
        phone_code=body.phone_code,
        settings=settings,
        address=client_address(request, settings),
        device=device_label(request.headers.get("user-agent")),
    )
    assert tokens.refresh_token is not None
    out = WechatBound(
        bind_required=False,
        access_token=tokens.access_token,
        expires_in=tokens.expires_in,
        refresh_token=tokens.refresh_token,
        account_created=created,
    )
    return JSONResponse(out.model_dump(mode="json"), headers=_NO_STORE)


@router.delete(
    "/me/wechat",
    tags=["me"],
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 403, 404),
    summary="Unbind my WeChat user",
    description="The next WeChat sign-in asks to bind again. 404 `wechat_not_bound`.",
)
async def me_wechat_unbind(principal: CurrentMember, db: DbSession) -> Response:
    assert principal.user is not None
    await service.unbind(db, user_id=principal.user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
