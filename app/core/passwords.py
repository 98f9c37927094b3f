"""Argon2id password hashing and the strength check of new passwords, both off the event loop.

Strength is estimated with zxcvbn (dictionaries of common passwords, names, keyboard
patterns, dates and sequences), with the account's own phone number and name as extra
words: `12345678`, `password`, the phone number or the name are refused.  Only setting a
password is checked; signing in never re-checks the strength of a stored one."""

from __future__ import annotations

from functools import lru_cache

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

from app.core.errors import ValidationFailed, register_codes
from app.core.i18n import text

register_codes(
    {
        "weak_password": (
            422,
            "密码太简单或太常见，请换一个更难猜的密码",
            "The password is too weak or too common; choose one that is harder to guess",
        )
    }
)

# zxcvbn refuses longer inputs (its cost grows with the length); the first characters decide.
_ESTIMATE_MAX = 72


@lru_cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


# A real hash of a random password, verified against when the account does not exist so
# that an unknown phone costs the same time as a wrong password.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$8Oq0t4Ql3cAo7W3eZyvVQw$"
    "2zv6xo8d1CBo4P0x+9m2hVvmr8l3QWvTbJmMlh0nAyU"
)


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher().hash, password)


def _verify(hashed: str | None, password: str) -> bool:
    try:
        return bool(_hasher().verify(hashed or _DUMMY_HASH, password)) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(hashed: str | None, password: str) -> bool:
    return await anyio.to_thread.run_sync(_verify, hashed, password)


def hash_password_sync(password: str) -> str:
    """For the CLI and seeding, which run outside a request."""
    return _hasher().hash(password)


def password_score(password: str, user_inputs: list[str]) -> int:
    """zxcvbn's score, 0 (guessed at once) to 4 (very hard to guess)."""
    words = [word for word in user_inputs if word]
    return int(zxcvbn(password[:_ESTIMATE_MAX], user_inputs=words)["score"])


async def require_strong_password(
    password: str, *, min_score: int, user_inputs: list[str], field: str = "password"
) -> None:
    """422 `weak_password` unless zxcvbn scores `password` at least `min_score`, counting the
    account's own words (`user_inputs`: phone number, name) as known to a guesser."""
    score = await anyio.to_thread.run_sync(password_score, password, user_inputs)
    if score < min_score:
        raise ValidationFailed(
            field,
            text(
                "密码太简单或太常见（如 12345678、password、手机号或姓名）",
                "Too weak or too common (such as 12345678, password, the phone number or name)",
            ),
            code="weak_password",
        )
