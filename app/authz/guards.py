"""Guards: the FastAPI dependencies routers declare to say who may call an endpoint.

This is the HTTP face of `app.authz`; the decisions themselves live in `scope.py`.  A router
names a guard in its signature and receives what the service needs (the principal, a resolved
scope, the organization the caller acts on), so that no router or service decides 403 versus
404 by itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from app.authz.principal import Principal
from app.authz.scope import (
    Scope,
    load_org_in_scope,
    officer_scope,
    officer_scope_required,
    require_member,
    require_officer_of,
    require_scope,
    scope_for,
)
from app.core import clock
from app.core.errors import Unauthorized
from app.core.tokens import TokenError, decode_access_token
from app.deps import DbSession
from app.models.auth import ApiClient, UserSession
from app.models.organization import Organization
from app.models.user import User

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /auth/token")


async def get_principal(
    request: Request,
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = await _authenticate(session, credentials)
    # Whose stored `Idempotency-Key` answers this request may replay (app/idempotency.py).
    request.state.idempotency_caller = principal.idempotency_caller
    return principal


async def _authenticate(
    session: DbSession, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    try:
        claims = decode_access_token(credentials.credentials)
    except TokenError as exc:
        raise Unauthorized("token_invalid") from exc
    if claims.kind == "client":
        client = (
            await session.execute(
                select(ApiClient).where(
                    ApiClient.client_id == claims.subject, ApiClient.is_active.is_(True)
                )
            )
        ).scalar_one_or_none()
        if client is None:
            raise Unauthorized("token_invalid")
        granted = frozenset(client.scopes.split()) & claims.scopes
        return Principal(client=client, scopes=granted)
    try:
        user_id = uuid.UUID(claims.subject)
    except ValueError as exc:
        raise Unauthorized("token_invalid") from exc
    # One query: the user, provided the session behind the token is still alive.
    row = (
        await session.execute(
            select(User)
            .join(UserSession, UserSession.user_id == User.id)
            .where(
                User.id == user_id,
                User.is_active.is_(True),
                UserSession.id == claims.session_id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > clock.now(),
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise Unauthorized("token_invalid")
    return Principal(user=row, session_id=claims.session_id)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
"""Anyone signed in: a person or a city client."""


async def get_member(principal: CurrentPrincipal) -> Principal:
    """A signed-in person (member, officer or admin); city clients are refused."""
    require_member(principal)
    return principal


CurrentMember = Annotated[Principal, Depends(get_member)]
"""A signed-in person; city clients get 403 `members_only`."""


async def _officer_scope(session: DbSession, principal: CurrentMember) -> Scope:
    return await officer_scope(session, principal)


OfficerScope = Annotated[Scope, Depends(_officer_scope)]
"""Where the signed-in person acts as an officer (possibly nowhere: objects are then 404)."""


async def _reviewer_scope(session: DbSession, principal: CurrentMember) -> Scope:
    return await officer_scope_required(session, principal)


ReviewerScope = Annotated[Scope, Depends(_reviewer_scope)]
"""Where the signed-in person acts as an officer; 403 for someone who is an officer nowhere."""

OrgIdPath = Annotated[uuid.UUID, Path(description="The organization whose subtree is read")]


async def _officer_org(
    org_id: OrgIdPath, session: DbSession, principal: CurrentMember
) -> Organization:
    return await require_officer_of(session, principal, org_id)


OfficerOrg = Annotated[Organization, Depends(_officer_org)]
"""`/orgs/{org_id}/...` for an officer of the organization or above: 404 when it does not
exist, 403 outside the caller's subtree."""


def officer_or_client_org(
    needed: str,
) -> Callable[[uuid.UUID, DbSession, CurrentPrincipal], Awaitable[Organization]]:
    """Like `OfficerOrg`, and open to city clients holding scope `needed` over the
    organization (403 `scope_missing` without it)."""

    async def guard(
        org_id: OrgIdPath, session: DbSession, principal: CurrentPrincipal
    ) -> Organization:
        require_scope(principal, needed)
        scope = await scope_for(session, principal, needed)
        return await load_org_in_scope(session, org_id, scope)

    return guard
