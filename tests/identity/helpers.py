"""Small helpers shared by the identity tests."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from stdnum.cn import ric

from app.models.user import User
from tests.fixtures.factories import PASSWORD
from tests.fixtures.problems import assert_problem


def valid_id_number(first17: str = "33020319900101123") -> str:
    """A resident ID number with a correct check digit."""
    return first17 + ric.calc_check_digit(first17 + "0")


def bad_checksum(number: str) -> str:
    last = "0" if number[-1] != "0" else "1"
    return number[:-1] + last


async def password_login(
    client: httpx.AsyncClient,
    phone: str,
    password: str = PASSWORD,
    **headers: str,
) -> httpx.Response:
    return await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": phone, "password": password},
        headers=headers,
    )


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": token}
    )


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def assert_oauth_error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """RFC 6749 §5.2 form (application/json), with the problem fields alongside."""
    body = assert_problem(r, status, error, media_type="application/json")
    assert body["error"] == error
    assert body["error_description"].isascii()
    assert r.headers["cache-control"] == "no-store"
    return body


def assert_validation_error(r: httpx.Response, *fields: str) -> list[dict[str, str]]:
    body = assert_problem(r, 422, "validation_error")
    errors: list[dict[str, str]] = body["errors"]
    assert errors
    named = {e["field"] for e in errors}
    for field in fields:
        assert field in named, errors
    return errors


async def fresh_user(sessionmaker: async_sessionmaker[AsyncSession], user: User) -> User:
    """The user as stored now, read through a new session."""
    async with sessionmaker() as s:
        stored = await s.get(User, user.id)
        assert stored is not None
        return stored


async def count_rows(sessionmaker: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with sessionmaker() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())
