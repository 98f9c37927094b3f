from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import get_storage
from app.integrations.storage import LocalStorage
from tests.contributions.helpers import World, build_world
from tests.fixtures.orgs import Tree


@pytest.fixture(autouse=True)
def storage_dir(app: FastAPI, tmp_path: Path) -> Iterator[Path]:
    """Evidence files go to a directory of the test's own."""
    root = tmp_path / "uploads"
    app.dependency_overrides[get_storage] = lambda: LocalStorage(root)
    yield root
    app.dependency_overrides.pop(get_storage, None)


@pytest.fixture
async def world(db: AsyncSession, tree: Tree) -> World:
    return await build_world(db, tree)
