"""The authz module: who may act where."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import (
    EVERYTHING,
    NOTHING,
    Principal,
    Scope,
    client_scope,
    directory_scope,
    load_org_in_scope,
    officer_scope,
    require_officer_above,
    require_officer_of,
    require_scope,
    scope_for,
)
from app.core.errors import Forbidden, NotFound
from app.models.organization import Organization
from tests.fixtures.factories import make_client, make_officer, make_org
from tests.fixtures.orgs import Tree


def member(tree: Tree, who: str) -> Principal:
    user = getattr(tree, who)
    return Principal(user=user)


async def names_in(db: AsyncSession, scope: Scope) -> set[str]:
    rows = await db.execute(select(Organization.name).where(scope.clause()))
    return set(rows.scalars())


class TestScope:
    def test_covers_path(self) -> None:
        scope = Scope(everything=False, prefixes=("/a/b/",))
        assert scope.covers_path("/a/b/")
        assert scope.covers_path("/a/b/c/")
        assert not scope.covers_path("/a/")
        assert not scope.covers_path("/a/bc/")
        assert EVERYTHING.covers_path("/x/")
        assert not NOTHING.covers_path("/x/")
        assert NOTHING.empty
        assert not scope.empty

    def test_covers_strictly_above(self) -> None:
        scope = Scope(everything=False, prefixes=("/a/b/",))
        assert not scope.covers_strictly_above("/a/b/")
        assert scope.covers_strictly_above("/a/b/c/")
        assert not scope.covers_strictly_above("/a/")
        assert not scope.covers_strictly_above("/z/b/c/")
        assert EVERYTHING.covers_strictly_above("/a/")
        assert not NOTHING.covers_strictly_above("/a/")

    async def test_clause_selects_the_subtrees(self, db: AsyncSession, tree: Tree) -> None:
        scope = Scope(everything=False, prefixes=(tree.r1.path, tree.s2.path))
        assert await names_in(db, scope) == {
            "力邦村党总支",
            "企业支部",
            "车间支部",
            "鼓楼街道",
            "天一商务楼宇党委",
        }
        assert len(await names_in(db, EVERYTHING)) == 9
        assert await names_in(db, NOTHING) == set()

    async def test_clause_escapes_like_wildcards(self, db: AsyncSession, tree: Tree) -> None:
        assert await names_in(db, Scope(everything=False, prefixes=("%",))) == set()
        assert await names_in(db, Scope(everything=False, prefixes=("/_",))) == set()


class TestOfficerScope:
    async def test_admin_everything_member_nothing(self, db: AsyncSession, tree: Tree) -> None:
        assert (await officer_scope(db, member(tree, "admin"))).everything
        assert (await officer_scope(db, member(tree, "member"))).empty
        client, _ = await make_client(db)
        assert (await officer_scope(db, Principal(client=client))).empty

    async def test_officer_gets_their_subtrees_minimised(
        self, db: AsyncSession, tree: Tree
    ) -> None:
        # s1's secretary also serves r1 (inside s1) and r2 (elsewhere).
        await make_officer(db, tree.r1, tree.s1_officer, "worker")
        await make_officer(db, tree.r3, tree.s1_officer, "worker")
        scope = await officer_scope(db, member(tree, "s1_officer"))
        assert not scope.everything
        assert sorted(scope.prefixes) == sorted([tree.s1.path, tree.r3.path])


class TestClientScope:
    async def test_scopes_and_binding(self, db: AsyncSession, tree: Tree) -> None:
        city, _ = await make_client(db, scopes="orgs:read")
        p = Principal(client=city, scopes=frozenset({"orgs:read"}))
        assert (await client_scope(db, p, "orgs:read")).everything
        assert (await client_scope(db, p, "stats:read")).empty
        bound, _ = await make_client(db, scopes="orgs:read", org=tree.d2)
        p = Principal(client=bound, scopes=frozenset({"orgs:read"}))
        assert (await client_scope(db, p, "orgs:read")).prefixes == (tree.d2.path,)
        assert (await client_scope(db, member(tree, "admin"), "orgs:read")).empty
        assert (await scope_for(db, p, "orgs:read")).prefixes == (tree.d2.path,)
        assert (await scope_for(db, member(tree, "r1_officer"), "orgs:read")).prefixes == (
            tree.r1.path,
        )

    def test_require_scope(self) -> None:
        require_scope(Principal(), "orgs:read")  # people are not limited by client scopes
        require_scope(Principal(scopes=frozenset({"orgs:read"})), "orgs:read")


class TestDirectoryScope:
    async def test_members_read_everything(self, db: AsyncSession, tree: Tree) -> None:
        assert (await directory_scope(db, member(tree, "member"))).everything

    async def test_client_needs_orgs_read(self, db: AsyncSession, tree: Tree) -> None:
        client, _ = await make_client(db, scopes="stats:read")
        with pytest.raises(Forbidden) as info:
            await directory_scope(db, Principal(client=client, scopes=frozenset({"stats:read"})))
        assert info.value.code == "scope_missing"
        bound, _ = await make_client(db, scopes="orgs:read", org=tree.s1)
        scope = await directory_scope(db, Principal(client=bound, scopes=frozenset({"orgs:read"})))
        assert scope.prefixes == (tree.s1.path,)


class TestGuards:
    async def test_load_org_in_scope(self, db: AsyncSession, tree: Tree) -> None:
        scope = await officer_scope(db, member(tree, "s1_officer"))
        assert (await load_org_in_scope(db, tree.b1.id, scope)).id == tree.b1.id
        with pytest.raises(Forbidden):
            await load_org_in_scope(db, tree.r3.id, scope)
        with pytest.raises(Forbidden):
            await load_org_in_scope(db, tree.d1.id, scope)
        with pytest.raises(NotFound):
            await load_org_in_scope(db, uuid.uuid4(), scope)

    async def test_require_officer_of(self, db: AsyncSession, tree: Tree) -> None:
        assert (await require_officer_of(db, member(tree, "r1_officer"), tree.r1.id)).id == (
            tree.r1.id
        )
        with pytest.raises(Forbidden):
            await require_officer_of(db, member(tree, "s2_officer"), tree.r1.id)
        city, _ = await make_client(db, scopes="orgs:read")
        with pytest.raises(Forbidden):
            await require_officer_of(db, Principal(client=city, scopes=frozenset()), tree.r1.id)

    async def test_require_officer_above(self, db: AsyncSession, tree: Tree) -> None:
        s1_officer = member(tree, "s1_officer")
        assert (await require_officer_above(db, s1_officer, tree.r1.id)).id == tree.r1.id
        assert (await require_officer_above(db, s1_officer, tree.b1.id)).id == tree.b1.id
        with pytest.raises(Forbidden):
            await require_officer_above(db, s1_officer, tree.s1.id)  # their own organization
        with pytest.raises(Forbidden):
            await require_officer_above(db, s1_officer, tree.r3.id)  # a sibling subtree
        with pytest.raises(Forbidden):
            await require_officer_above(db, member(tree, "member"), tree.b1.id)
        with pytest.raises(NotFound):
            await require_officer_above(db, s1_officer, uuid.uuid4())
        admin = member(tree, "admin")
        assert (await require_officer_above(db, admin, tree.d1.id)).id == tree.d1.id

    async def test_officer_of_two_levels_is_above_the_lower(
        self, db: AsyncSession, tree: Tree
    ) -> None:
        # An officer of both r1 and e1 is above e1 through r1.
        await make_officer(db, tree.e1, tree.r1_officer, "worker")
        p = member(tree, "r1_officer")
        assert (await require_officer_above(db, p, tree.e1.id)).id == tree.e1.id
        deep = await make_org(db, tree.b1, kind="building")
        assert (await require_officer_above(db, p, deep.id)).id == deep.id
