"""`/auth/*` and `/me*`: HTTP only.  The rules live in `accounts` (registering, the
profile), `sessions` (devices) and `grants` (the token endpoint)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response, status
from fastapi.responses import JSONResponse

from app.authz.guards import CurrentMember
from app.core.errors import problem_body
from app.core.openapi import problems
from app.deps import AppSettings, DbSession, Paging, SessionFactory, client_address
from app.idempotency import IdempotentRoute, replays_anonymous
from app.identity import accounts, grants, sessions
from app.identity.oauth import OAuthError
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

router = APIRouter(route_class=IdempotentRoute)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# --- auth ----------------------------------------------------------------------------------


@router.post(
    "/auth/register",
    tags=["auth"],
    status_code=status.HTTP_201_CREATED,
    response_model=MeRead,
    responses=problems(409, 422, 429),
    summary="Create a member account",
)
@replays_anonymous
async def auth_register(
    body: RegisterIn,
    request: Request,
    db: DbSession,
    factory: SessionFactory,
    settings: AppSettings,
) -> MeRead:
    return await accounts.register(
        db, factory, settings, address=client_address(request, settings), data=body
    )


_OAUTH_ERROR = {
    "model": OAuthProblem,
    "content": {"application/json": {}},
}


def _oauth_error_response(exc: OAuthError) -> JSONResponse:
    body = problem_body(exc.code, exc.status, exc.detail)
    body["error"] = exc.code
    body["error_description"] = exc.error_description
    return JSONResponse(body, status_code=exc.status, headers={**exc.headers, **_NO_STORE})


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
    raw = await request.form()
    try:
        tokens = await grants.exchange(
            factory,
            settings,
            form,
            fields={key: raw.getlist(key) for key in raw},
            authorization=request.headers.get("authorization"),
            address=client_address(request, settings),
            user_agent=request.headers.get("user-agent"),
        )
    except OAuthError as exc:
        return _oauth_error_response(exc)
    body = TokenOut(
        access_token=tokens.access_token,
        expires_in=tokens.expires_in,
        refresh_token=tokens.refresh_token,
        scope=tokens.scope,
    )
    return JSONResponse(body.model_dump(exclude_none=True), headers=_NO_STORE)


@router.post(
    "/auth/logout",
    tags=["auth"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 403, 422),
    summary="Sign this device out: its refresh token and session die",
)
async def auth_logout(body: LogoutIn, db: DbSession, me: CurrentMember) -> Response:
    await sessions.logout(db, me.person, body.refresh_token)
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
    return await accounts.profile(db, me.person)


@router.patch(
    "/me",
    tags=["me"],
    response_model=MeRead,
    responses=problems(401, 403, 422, 429),
    summary="Change my profile (fields left out are kept, null clears)",
    description=(
        "An `id_number` is answered the same whether or not another account holds it: such "
        "a number is kept aside, shown masked, for an officer to settle, and not stored on "
        "the account. Requests that send an `id_number` are limited per account and day "
        "(429 `too_many_requests` with Retry-After)."
    ),
)
async def me_update(
    body: MeUpdate, db: DbSession, me: CurrentMember, settings: AppSettings
) -> MeRead:
    return await accounts.update_profile(db, me.person, body, settings=settings)


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
    params: Paging,
) -> SessionPage:
    return await sessions.list_sessions(db, me, params)


@router.delete(
    "/me/sessions/{session_id}",
    tags=["me"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(401, 403, 404, 422),
    summary="Sign one of my devices out",
)
async def me_sessions_revoke(session_id: uuid.UUID, db: DbSession, me: CurrentMember) -> Response:
    await sessions.revoke_own_session(db, me.person, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
