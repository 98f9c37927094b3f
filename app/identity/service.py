"""Identity rules: accounts, sign-in (password, refresh token, client credentials), sessions
with rotating refresh tokens, and the member's own profile.

No FastAPI and no commits here: the caller owns the transaction.  The one place where a
failing request must still leave a write behind (revoking a session whose refresh token was
replayed) is signalled with `RefreshTokenReused`, so that the caller can roll back the
failed exchange and commit the revocation in a transaction of its own.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core import clock
from app.core.audit import audit
from app.core.crypto import blind_index, encrypt, mask_id_number, sha256_hex
from app.core.errors import CATALOG, AppError, NotFound, ValidationFailed, register_codes
from app.core.i18n import text
from app.core.pagination import PageParams, keyset, page_of
from app.core.passwords import hash_password, verify_password
from app.core.throttle import hit
from app.core.tokens import issue_access_token, new_opaque
from app.core.validators import normalize_mainland_mobile
from app.identity.schemas import (
    PASSWORD_MAX,
    MeRead,
    MeUpdate,
    OfficeRead,
    RegisterIn,
    SessionPage,
    SessionRead,
)
from app.models.auth import ApiClient, RefreshToken, UserSession
from app.models.enums import OfficerRole
from app.models.organization import Officer, Organization
from app.models.user import User

logger = logging.getLogger("quyu.identity")

# RFC 6749 §5.2 error codes, used as problem codes as well.
register_codes(
    {
        "invalid_request": (
            400,
            "请求缺少必需的参数或格式有误",
            "The request is missing a parameter or is malformed",
        ),
        "invalid_grant": (
            400,
            "登录凭据无效、已过期或已被撤销",
            "The grant is invalid, expired or revoked",
        ),
        "invalid_client": (401, "客户端认证失败", "Client authentication failed"),
        "unsupported_grant_type": (400, "不支持的授权类型", "The grant type is not supported"),
        "invalid_scope": (400, "请求的权限范围无效", "The requested scope is not valid"),
    }
)

ID_NUMBER_CONTEXT = "users.id_number"
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_DEVICE_MAX = 120
BASIC_CHALLENGE = 'Basic realm="quyu", charset="UTF-8"'


class OAuthError(AppError):
    """An RFC 6749 §5.2 error.  `error_description` must be ASCII, so it is always English;
    the problem `title` and `detail` follow the request's language."""

    def __init__(
        self,
        error: str,
        zh: str | None = None,
        en: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        _, catalog_zh, catalog_en = CATALOG[error]
        super().__init__(
            error, detail=text(zh or catalog_zh, en or catalog_en), status=status, headers=headers
        )
        self.error_description = en or catalog_en


class RefreshTokenReused(Exception):
    """A refresh token that was already exchanged came back: its session must be revoked."""

    def __init__(self, session_id: uuid.UUID) -> None:
        super().__init__("refresh token reused")
        self.session_id = session_id


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str | None = None
    scope: str | None = None


def _dead_refresh_token() -> OAuthError:
    # 401, not RFC 6749's 400: the client's credential is gone and it must sign in again.
    return OAuthError(
        "invalid_grant",
        "登录已失效，请重新登录",
        "The refresh token is invalid, expired or revoked; sign in again",
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="quyu"'},
    )


def device_label(user_agent: str | None) -> str | None:
    """What /me/sessions shows for a device: its User-Agent, printable and truncated."""
    if not user_agent:
        return None
    cleaned = "".join(ch for ch in user_agent if ch.isprintable()).strip()
    return cleaned[:_DEVICE_MAX] or None


# --- accounts ------------------------------------------------------------------------------


async def throttle_registration(
    factory: async_sessionmaker[AsyncSession], settings: Settings, address: str
) -> None:
    """Registration answers whether a phone is taken: limit it per client address."""
    await hit(
        factory,
        "register:addr:" + blind_index(address, context="throttle.address"),
        limit=settings.login_attempts_per_address,
        window_seconds=settings.login_window_seconds,
    )


async def register(session: AsyncSession, data: RegisterIn) -> User:
    taken = (
        await session.execute(select(User.id).where(User.phone == data.phone))
    ).scalar_one_or_none()
    if taken is not None:
        raise AppError("phone_taken")
    user = User(
        phone=data.phone,
        name=data.name,
        password_hash=await hash_password(data.password),
        is_admin=False,
        is_active=True,
        skills=[],
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # registered concurrently with the same phone
        raise AppError("phone_taken") from exc
    return user


# --- sessions and tokens -----------------------------------------------------------------


async def open_session(
    session: AsyncSession,
    user: User,
    *,
    settings: Settings,
    device: str | None,
    auth_method: str = "password",
) -> IssuedTokens:
    """Sign `user` in on a new device: a session, its first refresh token, an access token."""
    now = clock.now()
    user_session = UserSession(
        id=uuid.uuid4(),
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=settings.refresh_token_ttl_seconds),
        device=device,
        auth_method=auth_method,
    )
    session.add(user_session)
    await session.flush()
    refresh = new_opaque()
    session.add(
        RefreshToken(session_id=user_session.id, token_hash=sha256_hex(refresh), created_at=now)
    )
    await session.flush()
    access, expires_in = issue_access_token(
        kind="user", subject=str(user.id), session_id=user_session.id
    )
    return IssuedTokens(access_token=access, expires_in=expires_in, refresh_token=refresh)


async def throttle_login(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    username: str | None,
    address: str,
) -> None:
    """Count a password attempt per client address and per phone; 429 past either limit.

    Keys hold keyed hashes, never the phone number or address itself.  Each count is its
    own committed transaction, so failed attempts are counted too.
    """
    await hit(
        factory,
        "login:addr:" + blind_index(address, context="throttle.address"),
        limit=settings.login_attempts_per_address,
        window_seconds=settings.login_window_seconds,
    )
    phone = _phone_or_none(username)
    if phone is not None:
        await hit(
            factory,
            "login:phone:" + blind_index(phone, context="throttle.phone"),
            limit=settings.login_attempts_per_phone,
            window_seconds=settings.login_window_seconds,
        )


def _phone_or_none(username: str | None) -> str | None:
    if not username or len(username) > 20:
        return None
    try:
        return normalize_mainland_mobile(username)
    except ValueError:
        return None


async def password_grant(
    session: AsyncSession,
    *,
    settings: Settings,
    username: str,
    password: str,
    device: str | None,
) -> IssuedTokens:
    phone = _phone_or_none(username)
    user = None
    if phone is not None:
        user = (await session.execute(select(User).where(User.phone == phone))).scalar_one_or_none()
    # An unknown phone is checked against a dummy hash: it costs what a wrong password costs.
    valid = len(password) <= PASSWORD_MAX and await verify_password(
        user.password_hash if user is not None else None, password
    )
    if user is None or not valid or not user.is_active:
        raise OAuthError(
            "invalid_grant", "手机号或密码错误", "The phone number or password is wrong"
        )
    return await open_session(session, user, settings=settings, device=device)


async def refresh_grant(session: AsyncSession, *, refresh_token: str) -> IssuedTokens:
    """Exchange a refresh token for a new pair; the old one is spent.

    The exchange is one conditional UPDATE (`used_at IS NULL`, session alive, user active):
    of several concurrent exchanges of one token exactly one matches a row.  A token that
    exists but is spent raises `RefreshTokenReused`.
    """
    token_hash = sha256_hex(refresh_token)
    now = clock.now()
    live_sessions = (
        select(UserSession.id)
        .join(User, User.id == UserSession.user_id)
        .where(
            UserSession.revoked_at.is_(None),
            UserSession.expires_at > now,
            User.is_active.is_(True),
        )
    )
    spent = (
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_hash == token_hash,
                RefreshToken.used_at.is_(None),
                RefreshToken.session_id.in_(live_sessions.scalar_subquery()),
            )
            .values(used_at=now)
            .returning(RefreshToken.session_id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if spent is None:
        known = (
            await session.execute(
                select(RefreshToken.session_id, RefreshToken.used_at).where(
                    RefreshToken.token_hash == token_hash
                )
            )
        ).one_or_none()
        if known is not None and known.used_at is not None:
            raise RefreshTokenReused(known.session_id)
        raise _dead_refresh_token()
    user_id = (
        await session.execute(
            update(UserSession)
            .where(UserSession.id == spent)
            .values(last_used_at=now)
            .returning(UserSession.user_id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one()
    new_refresh = new_opaque()
    session.add(RefreshToken(session_id=spent, token_hash=sha256_hex(new_refresh), created_at=now))
    await session.flush()
    access, expires_in = issue_access_token(kind="user", subject=str(user_id), session_id=spent)
    return IssuedTokens(access_token=access, expires_in=expires_in, refresh_token=new_refresh)


async def revoke_session(session: AsyncSession, session_id: uuid.UUID, *, reason: str) -> bool:
    """Revoke a session (its refresh tokens and access tokens die with it)."""
    revoked = (
        await session.execute(
            update(UserSession)
            .where(UserSession.id == session_id, UserSession.revoked_at.is_(None))
            .values(revoked_at=clock.now(), revoked_reason=reason)
            .returning(UserSession.id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none() is not None
    if revoked and reason == "refresh_reuse":
        logger.warning(
            "refresh token reused: session revoked", extra={"session_id": str(session_id)}
        )
    return revoked


def _requested_scopes(scope: str | None) -> frozenset[str] | None:
    if scope is None or not scope.strip():
        return None
    tokens = scope.split(" ")
    if any(not _SCOPE_TOKEN.match(token) for token in tokens):
        raise OAuthError("invalid_scope", "权限范围格式有误", "The scope is malformed")
    return frozenset(tokens)


async def client_credentials_grant(
    session: AsyncSession,
    *,
    client_id: str,
    client_secret: str,
    scope: str | None,
) -> IssuedTokens:
    requested = _requested_scopes(scope)
    client = None
    if len(client_id) <= 64:
        client = (
            await session.execute(select(ApiClient).where(ApiClient.client_id == client_id))
        ).scalar_one_or_none()
    valid = len(client_secret) <= 200 and await verify_password(
        client.secret_hash if client is not None else None, client_secret
    )
    if client is None or not valid or not client.is_active:
        # Advertise the scheme we support; RFC 6749 requires it when Basic was used.
        raise OAuthError("invalid_client", headers={"WWW-Authenticate": BASIC_CHALLENGE})
    allowed = frozenset(client.scopes.split())
    granted = allowed if requested is None else requested
    if not granted <= allowed:
        raise OAuthError(
            "invalid_scope",
            "请求的权限范围超出该客户端的授权",
            "The requested scope exceeds the scopes granted to this client",
        )
    access, expires_in = issue_access_token(kind="client", subject=client.client_id, scopes=granted)
    return IssuedTokens(
        access_token=access, expires_in=expires_in, scope=" ".join(sorted(granted)) or None
    )


async def logout(session: AsyncSession, *, user_id: uuid.UUID, refresh_token: str) -> None:
    """Revoke the session the refresh token belongs to, if it is one of the caller's own.

    Anything else (unknown token, someone else's) changes nothing and says nothing.
    """
    family = select(RefreshToken.session_id).where(
        RefreshToken.token_hash == sha256_hex(refresh_token)
    )
    await session.execute(
        update(UserSession)
        .where(
            UserSession.id.in_(family.scalar_subquery()),
            UserSession.user_id == user_id,
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=clock.now(), revoked_reason="logout")
        .execution_options(synchronize_session=False)
    )


async def list_sessions(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    current_session_id: uuid.UUID | None,
    params: PageParams,
) -> SessionPage:
    """The caller's live sessions, newest first."""
    stmt = select(UserSession).where(
        UserSession.user_id == user_id,
        UserSession.revoked_at.is_(None),
        UserSession.expires_at > clock.now(),
    )
    stmt = keyset(stmt, [UserSession.created_at, UserSession.id], params, descending=True)
    rows: Sequence[UserSession] = (await session.execute(stmt)).scalars().all()
    items, next_cursor = page_of(rows, params, lambda s: (s.created_at, s.id))
    return SessionPage(
        items=[
            SessionRead(
                id=s.id,
                device=s.device,
                auth_method=s.auth_method,
                created_at=s.created_at,
                last_used_at=s.last_used_at,
                expires_at=s.expires_at,
                current=s.id == current_session_id,
            )
            for s in items
        ],
        next_cursor=next_cursor,
    )


async def revoke_own_session(
    session: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    """Sign one of the caller's devices out; someone else's (or a dead) session is a 404."""
    now = clock.now()
    revoked = (
        await session.execute(
            update(UserSession)
            .where(
                UserSession.id == session_id,
                UserSession.user_id == user_id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > now,
            )
            .values(revoked_at=now, revoked_reason="signed_out")
            .returning(UserSession.id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if revoked is None:
        raise NotFound()


# --- profile -------------------------------------------------------------------------------


async def offices_of(session: AsyncSession, user_id: uuid.UUID) -> list[OfficeRead]:
    rows = await session.execute(
        select(Officer.org_id, Organization.name, Officer.role)
        .join(Organization, Organization.id == Officer.org_id)
        .where(Officer.user_id == user_id)
        .order_by(Organization.name, Officer.org_id)
    )
    return [
        OfficeRead(org_id=org_id, org_name=name, role=OfficerRole(role))
        for org_id, name, role in rows
    ]


def to_read(user: User, offices: list[OfficeRead]) -> MeRead:
    return MeRead.model_validate(
        {
            "id": user.id,
            "phone": user.phone,
            "name": user.name,
            "role": user.role,
            "gender": user.gender,
            "party_status": user.party_status,
            "joined_party_on": user.joined_party_on,
            "record_org_id": user.record_org_id,
            "record_org_name": user.record_org_name,
            "employer": user.employer,
            "post_title": user.post_title,
            "skills": list(user.skills or []),
            "id_number_masked": user.id_number_masked,
            "offices": offices,
            "created_at": user.created_at,
        }
    )


async def profile(session: AsyncSession, user: User) -> MeRead:
    return to_read(user, await offices_of(session, user.id))


_PLAIN_FIELDS = ("name", "gender", "party_status", "joined_party_on", "employer", "post_title")


async def update_profile(session: AsyncSession, user: User, data: MeUpdate) -> None:
    """Apply the fields that were sent; null clears a field.  Checks first, then writes."""
    sent = data.model_fields_set
    if not sent:
        return
    if "record_org_id" in sent and data.record_org_id is not None:
        exists = (
            await session.execute(
                select(Organization.id).where(Organization.id == data.record_org_id)
            )
        ).scalar_one_or_none()
        if exists is None:
            raise ValidationFailed("record_org_id", text("组织不存在", "No such organization"))
    id_index: str | None = None
    if "id_number" in sent and data.id_number is not None:
        id_index = blind_index(data.id_number, context=ID_NUMBER_CONTEXT)
        holder = (
            await session.execute(
                select(User.id).where(User.id_number_index == id_index, User.id != user.id)
            )
        ).scalar_one_or_none()
        if holder is not None:
            raise AppError("id_number_taken")

    for name in _PLAIN_FIELDS:
        if name in sent:
            setattr(user, name, getattr(data, name))
    if "skills" in sent:
        user.skills = list(data.skills or [])
    # The record sits in one place: one of ours (by id) or elsewhere (by name).
    if "record_org_id" in sent:
        user.record_org_id = data.record_org_id
        if data.record_org_id is not None:
            user.record_org_name = None
    if "record_org_name" in sent:
        user.record_org_name = data.record_org_name
        if data.record_org_name is not None:
            user.record_org_id = None
    if "id_number" in sent:
        if data.id_number is None:
            user.id_number_enc = None
            user.id_number_index = None
            user.id_number_masked = None
        else:
            user.id_number_enc = encrypt(data.id_number, context=ID_NUMBER_CONTEXT)
            user.id_number_index = id_index
            user.id_number_masked = mask_id_number(data.id_number)
    # PIPL: record who changed which personal fields (names only, never values).
    audit(
        session,
        action="profile.update",
        object_type="user",
        object_id=user.id,
        org_id=None,
        actor_id=user.id,
        comment=",".join(sorted(sent)),
    )
    try:
        await session.flush()
    except IntegrityError as exc:  # the same ID number saved concurrently by another account
        raise AppError("id_number_taken") from exc
