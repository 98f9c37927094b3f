"""Request dependencies shared by every domain: the database session and the caller."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.core.errors import Forbidden, Unauthorized
from app.core.tokens import TokenError, decode_access_token
from app.db.session import session_scope
from app.models.auth import ApiClient, UserSession
from app.models.user import User


def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return factory


async def get_session(
    factory: Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)],
) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(factory):
        yield session


# Committed when the endpoint function returns, before the response is sent.
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
SessionFactory = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /auth/token")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a member (with their session) or a city-system client."""

    user: User | None = None
    session_id: uuid.UUID | None = None
    client: ApiClient | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.is_admin

    @property
    def person(self) -> User:
        """The signed-in person behind a CurrentMember (narrows the type)."""
        assert self.user is not None, "use with CurrentMember"
        return self.user

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.user.id if self.user is not None else None


async def get_principal(
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
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


async def get_member(principal: CurrentPrincipal) -> Principal:
    """A signed-in person (member, officer or admin); city clients are refused."""
    if principal.user is None:
        raise Forbidden("members_only")
    return principal


CurrentMember = Annotated[Principal, Depends(get_member)]


async def touch_session(session: AsyncSession, session_id: uuid.UUID) -> None:
    await session.execute(
        update(UserSession).where(UserSession.id == session_id).values(last_used_at=clock.now())
    )
