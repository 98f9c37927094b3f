"""One migration chain: upgrade head, no drift from the models, downgrade base, again."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import PG_ADMIN_DSN, TEST_DB, alembic_config


@pytest.fixture
async def scratch_url() -> AsyncIterator[str]:
    if TEST_DB == "postgres":
        import asyncpg

        name = f"quyu_migrations_{secrets.token_hex(4)}"
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        yield f"{base}/{name}"
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    else:
        path = Path(tempfile.gettempdir()) / f"quyu_migrations_{secrets.token_hex(4)}.db"
        yield f"sqlite+aiosqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


class TestMigrations:
    async def test_upgrade_check_downgrade(self, scratch_url: str) -> None:
        from alembic import command

        cfg = alembic_config(scratch_url)
        await asyncio.to_thread(command.upgrade, cfg, "head")
        assert "users" in await _tables(scratch_url)
        # alembic check raises when the models and the migrations disagree
        await asyncio.to_thread(command.check, cfg)
        await asyncio.to_thread(command.downgrade, cfg, "base")
        assert await _tables(scratch_url) == set()
        await asyncio.to_thread(command.upgrade, cfg, "head")
        await asyncio.to_thread(command.check, cfg)

    def test_single_head(self) -> None:
        from alembic.script import ScriptDirectory

        heads = ScriptDirectory.from_config(alembic_config()).get_heads()
        assert len(heads) == 1, f"the migration chain has several heads: {heads}"
