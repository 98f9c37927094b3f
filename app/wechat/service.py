"""WeChat sign-in rules: an openid bound to an account signs in; an unknown one gets a
short-lived, single-use bind token, which with the phone number from `getPhoneNumber` binds
the WeChat user to the account of that phone (made on the spot when there is none).

One WeChat user per account and one account per WeChat user, held by unique constraints.
OpenIDs are kept encrypted with a blind index for look-ups; the session_key encrypted.
WeChat is called before the request's database transaction starts, and never while one is
open: a slow WeChat then holds no locks (on SQLite every transaction takes the write lock).
No FastAPI and no commits here: the request's session commits after the endpoint returns
(the bind-token check alone has a short read-only transaction of its own).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core import clock
from app.core.audit import audit
from app.core.crypto import blind_index, encrypt, sha256_hex
from app.core.errors import AppError, Forbidden, NotFound, Unauthorized, register_codes
from app.core.throttle import throttle_address
from app.core.tokens import new_opaque
from app.core.validators import normalize_mainland_mobile
from app.db.session import separate_transaction
from app.identity.sessions import IssuedTokens, open_session
from app.integrations.wechat.client import WechatClient, WechatPhone
from app.models.user import User
from app.models.wechat import WechatAccount, WechatBindToken

register_codes(
    {
        "wechat_bind_token_invalid": (
            401,
            "绑定凭证无效、已使用或已过期，请重新登录",
            "The bind token is invalid, used or expired; sign in with WeChat again",
        ),
        "wechat_already_bound": (
            409,
            "该账号已绑定其他微信，或该微信已绑定其他账号",
            "The account is bound to another WeChat user, or this WeChat user to another account",
        ),
        "wechat_not_bound": (404, "当前账号未绑定微信", "No WeChat user is bound to this account"),
        "wechat_phone_unsupported": (
            422,
            "暂不支持该手机号，请使用中国大陆手机号",
            "Only mainland China mobile numbers are supported",
        ),
        "wechat_account_disabled": (403, "账号已停用", "This account is disabled"),
    }
)

OPENID = "wechat.openid"
UNIONID = "wechat.unionid"
SESSION_KEY = "wechat.session_key"
AUTH_METHOD = "wechat"
NEW_MEMBER_NAME = "微信用户"


@dataclass(frozen=True)
class BindTicket:
    bind_token: str
    expires_in: int


def openid_index(openid: str) -> str:
    return blind_index(openid, context=OPENID)


def _bind_token_invalid() -> Unauthorized:
    return Unauthorized("wechat_bind_token_invalid")


async def sign_in(
    session: AsyncSession,
    factory: async_sessionmaker[AsyncSession],
    wechat: WechatClient,
    code: str,
    *,
    settings: Settings,
    address: str,
    device: str | None,
) -> IssuedTokens | BindTicket:
    """Trade the `wx.login` code for the WeChat user (before `session` is first used, so that
    no transaction is open while WeChat is called); tokens when this WeChat user is bound,
    otherwise a bind ticket.  Attempts are limited per client `address` (429), counted
    before WeChat is called."""
    await throttle_address(factory, settings, action="wechat", address=address)
    wx = await wechat.code_to_session(code)
    now = clock.now()
    index = openid_index(wx.openid)
    found = (
        await session.execute(
            select(WechatAccount, User)
            .join(User, User.id == WechatAccount.user_id)
            .where(WechatAccount.openid_index == index)
        )
    ).one_or_none()
    if found is not None:
        account, user = found[0], found[1]
        if not user.is_active:
            raise Forbidden("wechat_account_disabled")
        account.session_key_enc = encrypt(wx.session_key, context=SESSION_KEY)
        if wx.unionid is not None:
            account.unionid_enc = encrypt(wx.unionid, context=UNIONID)
        account.last_login_at = now
        return await open_session(
            session, user, settings=settings, device=device, auth_method=AUTH_METHOD
        )
    token = new_opaque()
    ttl = settings.wechat_bind_token_ttl_seconds
    session.add(
        WechatBindToken(
            token_hash=sha256_hex(token),
            openid_index=index,
            openid_enc=encrypt(wx.openid, context=OPENID),
            unionid_enc=encrypt(wx.unionid, context=UNIONID) if wx.unionid else None,
            session_key_enc=encrypt(wx.session_key, context=SESSION_KEY),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )
    await session.flush()
    return BindTicket(bind_token=token, expires_in=ttl)


async def _require_live_bind_token(
    factory: async_sessionmaker[AsyncSession], bind_token: str
) -> None:
    """401 `wechat_bind_token_invalid` unless the bind token is unused and unexpired."""
    async with separate_transaction(
        factory, why="the check is closed before WeChat is called, holding no lock meanwhile"
    ) as session:
        live = await _bind_token_is_live(session, bind_token)
    if not live:
        raise _bind_token_invalid()


async def _bind_token_is_live(session: AsyncSession, bind_token: str) -> bool:
    found = (
        await session.execute(
            select(WechatBindToken.id).where(
                WechatBindToken.token_hash == sha256_hex(bind_token),
                WechatBindToken.used_at.is_(None),
                WechatBindToken.expires_at > clock.now(),
            )
        )
    ).scalar_one_or_none()
    return found is not None


def mainland_phone(phone: WechatPhone) -> str:
    if phone.country_code not in ("86", "+86"):
        raise AppError("wechat_phone_unsupported")
    try:
        return normalize_mainland_mobile(phone.pure_phone_number)
    except ValueError:
        raise AppError("wechat_phone_unsupported") from None


async def bind(
    session: AsyncSession,
    factory: async_sessionmaker[AsyncSession],
    wechat: WechatClient,
    *,
    bind_token: str,
    phone_code: str,
    settings: Settings,
    address: str,
    device: str | None,
) -> tuple[IssuedTokens, bool]:
    """Spend the bind token; bind its WeChat user to the account of the phone number behind
    `phone_code`, creating a member account when there is none.  Returns the tokens and
    whether an account was made.

    The bind token is checked first, in a short transaction of its own (`factory`), so that a
    forged or spent token costs no call to WeChat (and does not use up the member's phone
    code); WeChat is then asked for the number before `session` is first used, so that no
    transaction is open during the call.  Attempts are limited per client `address` (429),
    counted before anything else."""
    await throttle_address(factory, settings, action="wechat-bind", address=address)
    await _require_live_bind_token(factory, bind_token)
    phone = await wechat.phone_number(phone_code)
    number = mainland_phone(phone)
    now = clock.now()
    ticket = (
        await session.execute(
            update(WechatBindToken)
            .where(
                WechatBindToken.token_hash == sha256_hex(bind_token),
                WechatBindToken.used_at.is_(None),
                WechatBindToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(
                WechatBindToken.openid_index,
                WechatBindToken.openid_enc,
                WechatBindToken.unionid_enc,
                WechatBindToken.session_key_enc,
            )
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if ticket is None:
        raise _bind_token_invalid()

    user = (await session.execute(select(User).where(User.phone == number))).scalar_one_or_none()
    created = False
    if user is None:
        user = User(id=uuid.uuid4(), phone=number, name=NEW_MEMBER_NAME, password_hash=None)
        try:
            async with session.begin_nested():
                session.add(user)
        except IntegrityError:
            # The same phone registered a moment ago by another request.
            raise AppError("phone_taken") from None
        created = True
    elif not user.is_active:
        raise Forbidden("wechat_account_disabled")

    existing = (
        (
            await session.execute(
                select(WechatAccount).where(
                    or_(
                        WechatAccount.user_id == user.id,
                        WechatAccount.openid_index == ticket.openid_index,
                    )
                )
            )
        )
        .scalars()
        .all()
    )
    same = [a for a in existing if a.user_id == user.id and a.openid_index == ticket.openid_index]
    if len(existing) > len(same):
        raise AppError("wechat_already_bound")
    if same:
        # Bound already (a second bind of the same pair): refresh the session key only.
        same[0].session_key_enc = ticket.session_key_enc
        same[0].last_login_at = now
    else:
        try:
            async with session.begin_nested():
                session.add(
                    WechatAccount(
                        user_id=user.id,
                        openid_index=ticket.openid_index,
                        openid_enc=ticket.openid_enc,
                        unionid_enc=ticket.unionid_enc,
                        session_key_enc=ticket.session_key_enc,
                        last_login_at=now,
                    )
                )
        except IntegrityError:
            raise AppError("wechat_already_bound") from None
        audit(
            session,
            action="wechat.bound",
            object_type="user",
            object_id=user.id,
            org_id=None,
            actor_id=user.id,
            comment="account created" if created else None,
        )
    tokens = await open_session(
        session, user, settings=settings, device=device, auth_method=AUTH_METHOD
    )
    return tokens, created


async def unbind(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """Remove the caller's WeChat binding; the next WeChat sign-in asks to bind again."""
    removed = (
        await session.execute(
            delete(WechatAccount)
            .where(WechatAccount.user_id == user_id)
            .returning(WechatAccount.id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if removed is None:
        raise NotFound("wechat_not_bound")
    audit(
        session,
        action="wechat.unbound",
        object_type="user",
        object_id=user_id,
        org_id=None,
        actor_id=user_id,
    )


async def purge_bind_tokens(session: AsyncSession, *, older_than: timedelta) -> int:
    """Housekeeping: drop bind tokens that expired more than `older_than` ago."""
    result = await session.execute(
        delete(WechatBindToken)
        .where(WechatBindToken.expires_at < clock.now() - older_than)
        .returning(WechatBindToken.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())
