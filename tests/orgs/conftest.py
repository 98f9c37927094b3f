"""A small organization tree with officers at several levels, shared by the orgs tests.

奉化区 (district d1)                      海曙区 (district d2)
└── 西坞街道 (street s1)                  └── 鼓楼街道 (street s2)
    └── 力邦村党总支 (regional r1)            └── 天一商务楼宇 (regional r2)
        └── 企业支部 (enterprise e1)
            └── 车间支部 (building b1)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.organization import Organization
from app.models.user import User
from tests.fixtures.factories import login, make_officer, make_org, make_user


@dataclass
class Tree:
    d1: Organization
    s1: Organization
    r1: Organization
    e1: Organization
    b1: Organization
    d2: Organization
    s2: Organization
    r2: Organization
    admin: User
    s1_officer: User  # secretary of s1: acts on s1, r1, e1, b1
    r1_officer: User  # secretary of r1
    s2_officer: User  # secretary of the sibling subtree s2
    member: User  # no office anywhere
    h_admin: dict[str, str]
    h_s1: dict[str, str]
    h_r1: dict[str, str]
    h_s2: dict[str, str]
    h_member: dict[str, str]


@pytest.fixture
async def tree(db: AsyncSession) -> Tree:
    d1 = await make_org(db, name="奉化区", kind="district", level="committee")
    s1 = await make_org(db, d1, name="西坞街道", kind="street", level="committee")
    r1 = await make_org(
        db,
        s1,
        name="力邦村党总支",
        kind="regional",
        region_type="migrant_residence",
        lat=29.60,
        lng=121.40,
        address="奉化区西坞街道力邦村",
    )
    e1 = await make_org(db, r1, name="企业支部", kind="enterprise", level="branch")
    b1 = await make_org(db, e1, name="车间支部", kind="building", level="branch")
    d2 = await make_org(db, name="海曙区", kind="district", level="committee")
    s2 = await make_org(db, d2, name="鼓楼街道", kind="street", level="committee")
    r2 = await make_org(
        db,
        s2,
        name="天一商务楼宇党委",
        kind="regional",
        region_type="commercial_building",
        lat=29.87,
        lng=121.55,
    )
    admin = await make_user(db, name="管理员", is_admin=True)
    s1_officer = await make_officer(db, s1, await make_user(db, name="街道书记"))
    r1_officer = await make_officer(db, r1, await make_user(db, name="区域书记"))
    s2_officer = await make_officer(db, s2, await make_user(db, name="鼓楼书记"))
    member = await make_user(db, name="党员")
    return Tree(
        d1=d1,
        s1=s1,
        r1=r1,
        e1=e1,
        b1=b1,
        d2=d2,
        s2=s2,
        r2=r2,
        admin=admin,
        s1_officer=s1_officer,
        r1_officer=r1_officer,
        s2_officer=s2_officer,
        member=member,
        h_admin=await login(db, admin),
        h_s1=await login(db, s1_officer),
        h_r1=await login(db, r1_officer),
        h_s2=await login(db, s2_officer),
        h_member=await login(db, member),
    )


async def count_orgs(db: AsyncSession) -> int:
    return int((await db.execute(select(func.count()).select_from(Organization))).scalar_one())


async def fresh(db: AsyncSession, org: Organization) -> Organization:
    """The row as the database holds it now (not the factory's cached object)."""
    found = (
        await db.execute(
            select(Organization)
            .where(Organization.id == org.id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return found
