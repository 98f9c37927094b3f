from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.organization import Organization
from tests.checkins.helpers import Tree, build_tree
from tests.conftest import TEST_DB


@pytest.fixture(autouse=True)
async def _empty_tree_leaves_first(app: FastAPI, _clean_tables: None) -> AsyncIterator[None]:
    """The shared clean-up deletes all organizations in one statement, which SQLite refuses
    (parent_id is ON DELETE RESTRICT, checked row by row): remove the tree from its leaves up
    before it runs.  PostgreSQL truncates and needs nothing."""
    yield
    if TEST_DB == "postgres":
        return
    async with app.state.engine.begin() as conn:
        deepest = (await conn.execute(select(func.max(Organization.depth)))).scalar()
        for depth in range(deepest or 0, -1, -1):
            await conn.execute(delete(Organization).where(Organization.depth == depth))


@pytest.fixture
async def tree(db: AsyncSession) -> Tree:
    return await build_tree(db)
