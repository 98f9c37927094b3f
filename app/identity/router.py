"""`/auth/*` and `/me*`: HTTP only; the rules live in `app.identity.service`."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated
from urllib.parse import unquote_plus

from fastapi import APIRouter, Depends, Form, Request, Response, status
from fastapi.responses import JSONResponse

from app.authz.guards import CurrentMember
from app.config import Settings
from app.core.errors import problem_body
from app.core.openapi import problems
from app.core.pagination import PageParams, page_params
from app.deps import DbSession, SessionFactory
from app.identity import service
from app.identity.schemas import (
    LogoutIn,
    MeRead,
    MeUpdate,
    OAuthProblem,
    RegisterIn,
    SessionPage,
    TokenOut,
    TokenRequest,
)
from app.identity.service import IssuedTokens, OAuthError, RefreshTokenReused

router = APIRouter()

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM_MAX = 2000


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_app_settings)]


def client_address(request: Request, settings: Settings) -> str:
    """The caller's address; behind a trusted proxy, the one that proxy appended last."""
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return request.client.host if request.client else "unknown"


# --- auth ----------------------------------------------------------------------------------


@router.post(
    "/auth/register",
    tags=["auth"],
    status_code=status.HTTP_201_CREATED,
    response_model=MeRead,
    responses=problems(409, 422, 429),
    summary="Create a member account",
)
async def auth_register(
    body: RegisterIn,
    request: Request,
    db: DbSession,
    factory: SessionFactory,
    settings: AppSettings,
) -> MeRead:
    await service.throttle_registration(factory, settings, client_address(request, settings))
    user = await service.register(db, body)
    return service.to_read(user, offices=[])


_OAUTH_ERROR = {
    "model": OAuthProblem,
    "content": {"application/json": {}},
}


def _oauth_error_response(exc: OAuthError) -> JSONResponse:
    body = problem_body(exc.code, exc.status, exc.detail)
    body["error"] = exc.code
    body["error_description"] = exc.error_description
    return JSONResponse(body, status_code=exc.status, headers={**exc.headers, **_NO_STORE})


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """client_id and client_secret from `Authorization: Basic` (RFC 6749 §2.3.1), if sent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, param = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _invalid_basic() from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise _invalid_basic()
    return unquote_plus(client_id), unquote_plus(secret)


def _invalid_basic() -> OAuthError:
    return OAuthError(
        "invalid_client",
        headers={"WWW-Authenticate": service.BASIC_CHALLENGE},
    )


def _missing(name: str) -> OAuthError:
    return OAuthError("invalid_request", f"缺少参数 {name}", f"The parameter {name} is required")


async def _check_form(request: Request) -> None:
    form = await request.form()
    for key in set(form.keys()):
        values = form.getlist(key)
        if len(values) > 1:
            raise OAuthError(
                "invalid_request", f"参数 {key} 重复", f"The parameter {key} is repeated"
            )
        if any(not isinstance(v, str) or len(v) > _FORM_MAX for v in values):
            raise OAuthError(
                "invalid_request", f"参数 {key} 无效", f"The parameter {key} is not valid"
            )


@router.post(
    "/auth/token",
    tags=["auth"],
    response_model=TokenOut,
    response_model_exclude_none=True,
    responses={
        400: {**_OAUTH_ERROR, "description": "RFC 6749 error (`error`) with problem fields"},
        401: {
            **_OAUTH_ERROR,
            "description": "`invalid_client`, or `invalid_grant` for a dead refresh token",
        },
        **problems(429),
    },
    summary="OAuth 2.0 token endpoint (RFC 6749)",
    description=(
        "Form-encoded. `grant_type=password` (`username` = phone, `password`), "
        "`grant_type=refresh_token` (`refresh_token`; rotated on every use, a spent one "
        "revokes its whole session), `grant_type=client_credentials` (`client_id` and "
        "`client_secret` in the form or with HTTP Basic, optional `scope`)."
    ),
)
async def auth_token(
    request: Request,
    factory: SessionFactory,
    settings: AppSettings,
    form: Annotated[TokenRequest, Form()],
) -> Response:
    try:
        await _check_form(request)
        if not form.grant_type:
            raise _missing("grant_type")
        if form.grant_type == "password":
            if not form.username:
                raise _missing("username")
            if not form.password:
                raise _missing("password")
            # Counted in their own transactions before the attempt, so that failures count.
            await service.throttle_login(
                factory,
                settings,
                username=form.username,
                address=client_address(request, settings),
            )
            async with factory() as db, db.begin():
                tokens = await service.password_grant(
                    db,
                    settings=settings,
                    username=form.username,
                    password=form.password,
                    device=service.device_label(request.headers.get("user-agent")),
                )
        elif form.grant_type == "refresh_token":
            if not form.refresh_token:
                raise _missing("refresh_token")
            tokens = await _refresh(factory, form.refresh_token)
        elif form.grant_type == "client_credentials":
            tokens = await _client_credentials(
                request, factory, settings, form.client_id, form.client_secret, form.scope
            )
        else:
            raise OAuthError("unsupported_grant_type")
    except OAuthError as exc:
        return _oauth_error_response(exc)
    body = TokenOut(
        access_token=tokens.access_token,
        expires_in=tokens.expires_in,
        refresh_token=tokens.refresh_token,
        scope=tokens.scope,
    )
    return JSONResponse(body.model_dump(exclude_none=True), headers=_NO_STORE)


async def _refresh(factory: SessionFactory, refresh_token: str) -> IssuedTokens:
    """The exchange runs in its own transaction.  A replayed token fails the request, yet the
    revocation of its session must stay: the failed exchange is rolled back first (which
    also releases SQLite's write lock), then the revocation commits in a second one."""
    try:
        async with factory() as db, db.begin():
            return await service.refresh_grant(db, refresh_token=refresh_token)
    except RefreshTokenReused as reuse:
        async with factory() as db, db.begin():
            await service.revoke_session(db, reuse.session_id, reason="refresh_reuse")
        raise OAuthError(
            "invalid_grant",
            "登录凭据已被使用过，该设备已退出登录，请重新登录",
            "The refresh token was already used; the session is revoked, sign in again",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="quyu"'},
        ) from None


async def _client_credentials(
    request: Request,
    factory: SessionFactory,
    settings: Settings,
    client_id: str | None,
    client_secret: str | None,
    scope: str | None,
) -> IssuedTokens:
    basic = _basic_credentials(request)
    if basic is not None:
        if client_secret is not None or (client_id is not None and client_id != basic[0]):
            raise OAuthError(
                "invalid_request",
                "客户端认证方式只能使用一种",
                "Use one client authentication method, not two",
            )
        client_id, client_secret = basic
    elif not client_id or client_secret is None:
        raise OAuthError("invalid_client", headers={"WWW-Authenticate": service.BASIC_CHALLENGE})
    # Verifying a secret costs an argon2 hash: limit attempts per address like logins.
    await service.throttle_login(
        factory, settings, username=None, address=client_address(request, settings)
    )
    async with factory() as db, db.begin():
        return await service.client_credentials_grant(
            db,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
        )


@router.post(
    "/auth/logout",
    tags=["auth"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 403, 422),
    summary="Sign this device out: its refresh token and session die",
)
async def auth_logout(body: LogoutIn, db: DbSession, me: CurrentMember) -> Response:
    await service.logout(db, user_id=me.person.id, refresh_token=body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- me ------------------------------------------------------------------------------------


@router.get(
    "/me",
    tags=["me"],
    response_model=MeRead,
    responses=problems(401, 403),
    summary="My profile",
)
async def me_get(db: DbSession, me: CurrentMember) -> MeRead:
    return await service.profile(db, me.person)


@router.patch(
    "/me",
    tags=["me"],
    response_model=MeRead,
    responses=problems(401, 403, 409, 422),
    summary="Change my profile (fields left out are kept, null clears)",
)
async def me_update(body: MeUpdate, db: DbSession, me: CurrentMember) -> MeRead:
    user = me.person
    await service.update_profile(db, user, body)
    return await service.profile(db, user)


@router.get(
    "/me/sessions",
    tags=["me"],
    response_model=SessionPage,
    responses=problems(401, 403, 422),
    summary="Devices I am signed in on",
)
async def me_sessions_list(
    db: DbSession,
    me: CurrentMember,
    params: Annotated[PageParams, Depends(page_params)],
) -> SessionPage:
    return await service.list_sessions(
        db, user_id=me.person.id, current_session_id=me.session_id, params=params
    )


@router.delete(
    "/me/sessions/{session_id}",
    tags=["me"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 403, 404, 422),
    summary="Sign one of my devices out",
)
async def me_sessions_revoke(session_id: uuid.UUID, db: DbSession, me: CurrentMember) -> Response:
    await service.revoke_own_session(db, user_id=me.person.id, session_id=session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
