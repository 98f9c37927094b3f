"""Helpers for the WeChat tests: problem assertions, row counts, bound members."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.crypto import encrypt
from app.models.user import User
from app.models.wechat import WechatAccount
from app.wechat import service
from tests.fixtures.factories import make_user
from tests.wechat.conftest import FakeWechat


async def count(db: AsyncSession, model: Any) -> int:
    return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def bind_member(
    db: AsyncSession, fake: FakeWechat, user: User | None = None, *, wx_user: str | None = None
) -> tuple[User, str]:
    """A member whose account is bound to a WeChat user the stand-in knows; (user, openid)."""
    user = user or await make_user(db)
    openid = fake.state.openid_for(wx_user or f"member-{user.id.hex[:8]}")
    with fake.state.lock:
        fake.state.openids.add(openid)
    db.add(
        WechatAccount(
            user_id=user.id,
            openid_index=service.openid_index(openid),
            openid_enc=encrypt(openid, context=service.OPENID),
            session_key_enc=encrypt("k", context=service.SESSION_KEY),
        )
    )
    await db.commit()
    return user, openid
