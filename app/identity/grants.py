"""The token endpoint's grants (RFC 6749): which grant a request asks for, and each grant.

- `password`: a member signs in with phone and password and opens a session;
- `refresh_token`: a refresh token is exchanged for a new pair, the old one spent; a spent
  one coming back revokes its whole session;
- `client_credentials`: a city system obtains an access token for its scopes.

The endpoint has no request-wide transaction: a password attempt is counted by
`app.core.signin_guard` in a transaction of its own first (as a failure, taken back when it
signs in), then each grant runs in a short transaction of its own.  A replayed refresh
token fails the request, yet the revocation of its session must stay: the failed exchange
is rolled back first (which also releases SQLite's write lock), then the revocation commits
in a second transaction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core import clock, signin_guard
from app.core.crypto import sha256_hex
from app.core.passwords import verify_password
from app.core.throttle import throttle_address
from app.core.tokens import issue_access_token, new_opaque
from app.core.validators import normalize_mainland_mobile
from app.db.session import separate_transaction
from app.identity.oauth import (
    OAuthError,
    basic_credentials,
    check_form,
    invalid_client,
    missing,
)
from app.identity.schemas import PASSWORD_MAX, TokenRequest
from app.identity.sessions import IssuedTokens, device_label, open_session, revoke_session
from app.models.auth import ApiClient, RefreshToken, UserSession
from app.models.user import User

_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="quyu"'}


class RefreshTokenReused(Exception):
    """A refresh token that was already exchanged came back: its session must be revoked."""

    def __init__(self, session_id: uuid.UUID) -> None:
        super().__init__("refresh token reused")
        self.session_id = session_id


async def exchange(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    form: TokenRequest,
    *,
    fields: Mapping[str, Sequence[object]],
    authorization: str | None,
    address: str,
    user_agent: str | None,
) -> IssuedTokens:
    """Answer one token request: `form` as parsed, `fields` every value sent under each
    name, the `Authorization` header (client authentication), the caller's `address` (for
    the throttle) and User-Agent (the device of a new session).  Raises `OAuthError`."""
    check_form(fields)
    if not form.grant_type:
        raise missing("grant_type")
    if form.grant_type == "password":
        if not form.username:
            raise missing("username")
        if not form.password:
            raise missing("password")
        attempt = await signin_guard.admit(
            factory, settings, phone=_phone_or_none(form.username), address=address
        )
        async with separate_transaction(
            factory, why="a sign-in, after its attempt was counted"
        ) as db:
            tokens = await password_grant(
                db,
                settings=settings,
                username=form.username,
                password=form.password,
                device=device_label(user_agent),
            )
        await signin_guard.succeeded(factory, settings, attempt)
        return tokens
    if form.grant_type == "refresh_token":
        if not form.refresh_token:
            raise missing("refresh_token")
        return await _refresh(factory, form.refresh_token)
    if form.grant_type == "client_credentials":
        return await _client_credentials(factory, settings, form, authorization, address)
    raise OAuthError("unsupported_grant_type")


# --- password ------------------------------------------------------------------------------


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


# --- refresh token -------------------------------------------------------------------------


async def _refresh(factory: async_sessionmaker[AsyncSession], refresh_token: str) -> IssuedTokens:
    try:
        async with separate_transaction(
            factory, why="the exchange is rolled back alone when the token was replayed"
        ) as db:
            return await refresh_grant(db, refresh_token=refresh_token)
    except RefreshTokenReused as reuse:
        async with separate_transaction(
            factory, why="the revocation of a replayed token's session outlives the request"
        ) as db:
            await revoke_session(db, reuse.session_id, reason="refresh_reuse")
        raise OAuthError(
            "invalid_grant",
            "登录凭据已被使用过，该设备已退出登录，请重新登录",
            "The refresh token was already used; the session is revoked, sign in again",
            status=401,
            headers=dict(_BEARER_CHALLENGE),
        ) from None


def _dead_refresh_token() -> OAuthError:
    # 401, not RFC 6749's 400: the client's credential is gone and it must sign in again.
    return OAuthError(
        "invalid_grant",
        "登录已失效，请重新登录",
        "The refresh token is invalid, expired or revoked; sign in again",
        status=401,
        headers=dict(_BEARER_CHALLENGE),
    )


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


# --- client credentials --------------------------------------------------------------------


async def _client_credentials(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    form: TokenRequest,
    authorization: str | None,
    address: str,
) -> IssuedTokens:
    """The client authenticates with HTTP Basic or with `client_id` and `client_secret` in
    the form, not both."""
    client_id, client_secret = form.client_id, form.client_secret
    basic = basic_credentials(authorization)
    if basic is not None:
        if client_secret is not None or (client_id is not None and client_id != basic[0]):
            raise OAuthError(
                "invalid_request",
                "客户端认证方式只能使用一种",
                "Use one client authentication method, not two",
            )
        client_id, client_secret = basic
    elif not client_id or client_secret is None:
        raise invalid_client()
    # Verifying a secret costs an argon2 hash: attempts are limited per address.
    await throttle_address(factory, settings, action="client", address=address)
    async with separate_transaction(factory, why="a client's sign-in, after it was counted") as db:
        return await client_credentials_grant(
            db, client_id=client_id, client_secret=client_secret, scope=form.scope
        )


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
        raise invalid_client()
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
