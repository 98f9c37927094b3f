"""Argon2id password hashing, always off the event loop."""

from __future__ import annotations

from functools import lru_cache

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


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
