from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.checkins.helpers import Tree, build_tree


@pytest.fixture
async def tree(db: AsyncSession) -> Tree:
    return await build_tree(db)
