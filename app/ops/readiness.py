"""Readiness: whether the database answers, asked afresh on every call (no caching)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# How long the database may take to answer before the process counts as not ready.
TIMEOUT_SECONDS = 2.0


async def database_answers(engine: AsyncEngine) -> bool:
    """True when `SELECT 1` comes back within `TIMEOUT_SECONDS`; False on any failure."""
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
