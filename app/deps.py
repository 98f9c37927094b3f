"""Request dependencies shared by every router: the database session and the settings.

Who is calling is answered by the guards in `app.authz.guards`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.session import session_scope


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return factory


async def get_session(
    factory: Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)],
) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(factory):
        yield session


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was created with (`create_app(settings=...)`)."""
    settings: Settings = request.app.state.settings
    return settings


# Committed when the endpoint function returns, before the response is sent.
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
SessionFactory = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
