"""Many writers at once on the embedded database: they queue, none fails.

On SQLite one connection writes at a time.  A burst of registrations, sign-ins and profile
edits (a demo, a small office on its first morning) must wait its turn, not answer 500
"database is locked" (see `app.db.session.create_engine`).  Each of these requests holds the
write lock through an argon2 hash or a few statements, so the burst takes seconds; the app
under test is given a busy timeout (the wait for another process's lock) shorter than that,
which the writers of one process must never run into.  The test runs on PostgreSQL too."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.main import create_app
from app.models.auth import UserSession
from app.models.user import User
from tests.fixtures.factories import PASSWORD, login, make_user
from tests.identity.helpers import password_login

REGISTRATIONS = 16
SIGN_INS = 16
EDITS = 18
BUSY_TIMEOUT_SECONDS = 1.0


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    """An app of its own on the test database, with the short busy timeout."""
    settings = get_settings().model_copy(
        update={"sqlite_busy_timeout_seconds": BUSY_TIMEOUT_SECONDS}
    )
    app = create_app(settings, configure_logs=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as c,
    ):
        yield c


def _phone() -> str:
    return "139" + f"{secrets.randbelow(10**8):08d}"


@pytest.mark.committing
class TestConcurrentWriters:
    async def test_fifty_writers_at_once_all_succeed(
        self, api: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        signing_in = [await make_user(db) for _ in range(SIGN_INS)]
        editing = [await make_user(db) for _ in range(EDITS)]
        headers = [await login(db, user) for user in editing]
        phones = {_phone() for _ in range(REGISTRATIONS)}
        signing_in_ids = [u.id for u in signing_in]
        editing_ids = [u.id for u in editing]

        answers = await asyncio.gather(
            *(
                api.post("/auth/register", json={"phone": p, "password": PASSWORD, "name": "并发"})
                for p in phones
            ),
            *(password_login(api, user.phone) for user in signing_in),
            *(
                api.patch("/me", json={"employer": f"单位{i}"}, headers=h)
                for i, h in enumerate(headers)
            ),
        )

        failed = [(r.status_code, r.text) for r in answers if not r.is_success]
        assert not failed, failed
        assert len(answers) == len(phones) + SIGN_INS + EDITS
        db.expire_all()
        registered = select(func.count()).select_from(User).where(User.phone.in_(phones))
        assert await db.scalar(registered) == len(phones)
        opened = (
            select(func.count())
            .select_from(UserSession)
            .where(UserSession.user_id.in_(signing_in_ids))
        )
        assert await db.scalar(opened) == SIGN_INS
        employers = await db.scalars(select(User.employer).where(User.id.in_(editing_ids)))
        assert sorted(e or "" for e in employers) == sorted(f"单位{i}" for i in range(EDITS))
