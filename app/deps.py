"""Request dependencies shared by every router: the database session, the settings, the
evidence store and the page parameters.

Who is calling is answered by the guards in `app.authz.guards`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.pagination import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT, PageParams
from app.db.session import session_scope
from app.integrations.storage import Storage


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return factory


async def get_session(
    request: Request,
    factory: Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)],
) -> AsyncIterator[AsyncSession]:
    async with session_scope(factory) as session:
        # The request's one session, for the answer `Idempotency-Key` keeps in its
        # transaction (app/idempotency.py).
        request.state.db_session = session
        yield session


def client_address(request: Request, settings: Settings) -> str:
    """The caller's address; behind a trusted proxy, the one that proxy appended last."""
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return request.client.host if request.client else "unknown"


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was created with (`create_app(settings=...)`)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_storage(request: Request) -> Storage:
    """The application's evidence store (made at start-up from its settings)."""
    storage: Storage = request.app.state.storage
    return storage


# Committed once the route handler has returned (the endpoint ran, its answer was serialized
# and, for a keyed POST, kept in the same transaction), before the response is sent.
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
SessionFactory = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
AppStorage = Annotated[Storage, Depends(get_storage)]


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (max 100)")] = (
        DEFAULT_LIMIT
    ),
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            # Declared, not enforced here: any other cursor is 422 `invalid_cursor` too.
            json_schema_extra={"pattern": CURSOR_PATTERN},
            description="`next_cursor` of the previous page, as given (422 `invalid_cursor` "
            "for one this server did not issue for this list)",
        ),
    ] = None,
) -> PageParams:
    """`?limit=&cursor=` of every list endpoint."""
    return PageParams(limit=limit, cursor=cursor)


Paging = Annotated[PageParams, Depends(page_params)]
