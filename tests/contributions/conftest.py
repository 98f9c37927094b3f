from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.contributions.storage import LocalStorage, get_storage
from app.models.activity import Activity
from app.models.organization import Organization
from tests.conftest import TEST_DB
from tests.contributions.helpers import World, build_world


@pytest.fixture(autouse=True)
async def _empty_tree_leaves_first(app: FastAPI, _clean_tables: None) -> AsyncIterator[None]:
    """SQLite refuses to delete a whole tree in one statement (parent_id is ON DELETE
    RESTRICT, checked row by row): remove it from the leaves up first."""
    yield
    if TEST_DB == "postgres":
        return
    async with app.state.engine.begin() as conn:
        # Activities hold their organizations with ON DELETE RESTRICT too.
        await conn.execute(delete(Activity))
        deepest = (await conn.execute(select(func.max(Organization.depth)))).scalar()
        for depth in range(deepest or 0, -1, -1):
            await conn.execute(delete(Organization).where(Organization.depth == depth))


@pytest.fixture(autouse=True)
def storage_dir(app: FastAPI, tmp_path: Path) -> Iterator[Path]:
    """Evidence files go to a directory of the test's own."""
    root = tmp_path / "uploads"
    app.dependency_overrides[get_storage] = lambda: LocalStorage(root)
    yield root
    app.dependency_overrides.pop(get_storage, None)


@pytest.fixture
async def world(db: AsyncSession) -> World:
    return await build_world(db)
