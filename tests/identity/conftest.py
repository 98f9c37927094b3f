from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.models.organization import Organization


@pytest.fixture(autouse=True)
async def _unlink_org_tree(app: FastAPI, _clean_tables: None) -> AsyncIterator[None]:
    """Runs its teardown before the root conftest empties the tables: SQLite checks the
    `parent_id` foreign key (ON DELETE RESTRICT) row by row, so a plain `DELETE FROM
    organizations` fails as soon as a parent row goes before its child."""
    yield
    async with app.state.engine.begin() as conn:
        await conn.execute(update(Organization).values(parent_id=None))
