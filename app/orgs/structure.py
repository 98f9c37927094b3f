"""The shape of the organization tree and changes to it: which kind may hang under which,
how deep the tree may grow, founding an organization, editing one, and moving one with its
whole subtree (the materialized paths are rewritten in one statement).

Officers act on their own subtree (`scope`), an admin on the whole tree; only an admin founds
or makes a root.  No commit here: the request's session commits once after the endpoint.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.authz import (
    Principal,
    Scope,
    load_org_in_scope,
    path_within,
    require_covers,
    require_whole_tree,
)
from app.core.audit import audit
from app.core.errors import AppError, ValidationFailed, register_codes
from app.core.i18n import text
from app.core.outbox import record_event
from app.models.enums import OrgKind
from app.models.organization import Organization
from app.orgs import repository as repo
from app.orgs.schemas import OrgCreate, OrgRead, OrgUpdate
from app.orgs.tree import child_path
from app.orgs.views import org_read

register_codes(
    {
        "invalid_parent": (422, "上级组织无效", "The parent organization is not valid"),
        "org_tree_too_deep": (
            422,
            "组织层级过深",
            "The organization tree would become too deep",
        ),
    }
)

# Which kinds an organization of each kind may hang under (None: a root).
ALLOWED_PARENTS: dict[OrgKind, frozenset[OrgKind | None]] = {
    OrgKind.district: frozenset({None}),
    OrgKind.street: frozenset({OrgKind.district}),
    OrgKind.park: frozenset({OrgKind.district}),
    OrgKind.regional: frozenset({OrgKind.street, OrgKind.park, OrgKind.district}),
    OrgKind.enterprise: frozenset({OrgKind.regional, OrgKind.enterprise, OrgKind.building}),
    OrgKind.building: frozenset({OrgKind.regional, OrgKind.enterprise, OrgKind.building}),
}
# Kinds that may carry a founding form (挂靠联建, 村企联建, ...): not the administrative levels.
_NO_FOUNDING_FORM = frozenset({OrgKind.district, OrgKind.street, OrgKind.park})

# `path` is String(700) and every level adds 33 characters ("<32 hex>/") after the leading "/".
_SEGMENT = 33
MAX_DEPTH = (700 - 1) // _SEGMENT - 1  # depth of the deepest allowed node (root is 0)

# Plain fields an edit may change, with the same name on the request and the model.
_SCALARS = ("name", "kind", "level", "region_type", "founding_form", "address")


# --- rules of the tree ------------------------------------------------------------------


def _invalid_parent(message: str) -> AppError:
    return AppError("invalid_parent", errors=[{"field": "parent_id", "message": message}])


def _check_parent_kind(kind: OrgKind, parent_kind: str | None) -> None:
    parent = OrgKind(parent_kind) if parent_kind is not None else None
    if parent not in ALLOWED_PARENTS[kind]:
        allowed = ", ".join(sorted(str(k) for k in ALLOWED_PARENTS[kind] if k is not None))
        if parent is None:
            raise _invalid_parent(
                text(f"{kind} 必须有上级组织（{allowed}）", f"A {kind} needs a parent: {allowed}")
            )
        if not allowed:
            raise _invalid_parent(text(f"{kind} 不能有上级组织", f"A {kind} has no parent"))
        raise _invalid_parent(
            text(
                f"{kind} 的上级组织只能是 {allowed}",
                f"A {kind} can only be placed under: {allowed}",
            )
        )


def _check_fields(kind: OrgKind, region_type: str | None, founding_form: str | None) -> None:
    if kind is OrgKind.regional and region_type is None:
        raise ValidationFailed(
            "region_type",
            text("区域性党组织必须填写区域类型", "Required for a regional organization"),
        )
    if kind is not OrgKind.regional and region_type is not None:
        raise ValidationFailed(
            "region_type",
            text("仅区域性党组织可填写区域类型", "Only a regional organization has one"),
        )
    if kind in _NO_FOUNDING_FORM and founding_form is not None:
        raise ValidationFailed(
            "founding_form",
            text(f"{kind} 不适用组建方式", f"Not applicable to a {kind}"),
        )


def _check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AppError(
            "org_tree_too_deep",
            errors=[
                {
                    "field": "parent_id",
                    "message": text(
                        f"组织层级不能超过 {MAX_DEPTH + 1} 级",
                        f"At most {MAX_DEPTH + 1} levels",
                    ),
                }
            ],
        )


async def _check_children_fit(session: AsyncSession, org_id: uuid.UUID, kind: OrgKind) -> None:
    """An organization changing kind must still be an allowed parent of its children."""
    for child in await repo.child_kinds(session, org_id):
        if kind not in ALLOWED_PARENTS[OrgKind(child)]:
            raise ValidationFailed(
                "kind",
                text(
                    f"下级组织（{child}）不能隶属于 {kind}",
                    f"Its {child} children cannot belong to a {kind}",
                ),
            )


async def _load_parent(session: AsyncSession, parent_id: uuid.UUID, scope: Scope) -> Organization:
    """The parent named in a request, row-locked so that it cannot move meanwhile: 422 when
    it does not exist, 403 outside the caller's subtree."""
    parent = await repo.get_org_locked(session, parent_id)
    if parent is None:
        raise _invalid_parent(text("上级组织不存在", "No such organization"))
    require_covers(scope, parent.path)
    return parent


# --- founding ---------------------------------------------------------------------------


async def create_org(
    session: AsyncSession, actor: Principal, scope: Scope, data: OrgCreate
) -> OrgRead:
    """Found an organization under a parent in the caller's `scope` (officer scope), or a
    root organization (admins only)."""
    parent: Organization | None = None
    if data.parent_id is not None:
        parent = await _load_parent(session, data.parent_id, scope)
    else:
        require_whole_tree(scope)
    _check_parent_kind(data.kind, parent.kind if parent else None)
    _check_fields(data.kind, data.region_type, data.founding_form)
    depth = parent.depth + 1 if parent else 0
    _check_depth(depth)

    org_id = uuid.uuid4()
    org = Organization(
        id=org_id,
        name=data.name,
        kind=data.kind,
        level=data.level,
        region_type=data.region_type,
        founding_form=data.founding_form,
        address=data.address,
        lat=data.location.lat if data.location else None,
        lng=data.location.lng if data.location else None,
        parent_id=parent.id if parent else None,
        path=child_path(parent.path if parent else None, org_id),
        depth=depth,
    )
    session.add(org)
    await session.flush()
    audit(
        session,
        action="org.created",
        object_type="organization",
        object_id=org.id,
        org_id=org.id,
        actor_id=actor.user_id,
    )
    record_event(
        session,
        "org.created",
        {"org_id": str(org.id), "parent_id": str(parent.id) if parent else None},
        aggregate_id=str(org.id),
    )
    return org_read(org, parent)


# --- editing and moving -----------------------------------------------------------------


async def update_org(
    session: AsyncSession, actor: Principal, scope: Scope, org_id: uuid.UUID, data: OrgUpdate
) -> OrgRead:
    """Change the fields that were sent; a new `parent_id` moves the whole subtree (the new
    parent must lie in the caller's scope too, and outside the subtree moved)."""
    org = await load_org_in_scope(session, org_id, scope)
    # Re-read it row-locked (PostgreSQL) so that a concurrent move cannot change its path.
    await repo.get_org_locked(session, org_id, exclusive=True)
    require_covers(scope, org.path)
    sent = data.model_fields_set
    moving = "parent_id" in sent and data.parent_id != org.parent_id

    kind = OrgKind(data.kind) if "kind" in sent and data.kind else OrgKind(org.kind)
    region_type = data.region_type if "region_type" in sent else org.region_type
    founding_form = data.founding_form if "founding_form" in sent else org.founding_form

    parent: Organization | None = None
    if moving:
        parent = await _new_parent(session, scope, org, data.parent_id)
    elif org.parent_id is not None:
        parent = await session.get(Organization, org.parent_id)

    _check_parent_kind(kind, parent.kind if parent else None)
    _check_fields(kind, region_type, founding_form)
    if kind != org.kind:
        await _check_children_fit(session, org.id, kind)

    changed: list[str] = []
    if moving:
        await _move(session, org, parent)
        changed.append("parent_id")
    changed += _apply_fields(org, data)

    if changed:
        await session.flush()
        audit(
            session,
            action="org.updated",
            object_type="organization",
            object_id=org.id,
            org_id=org.id,
            actor_id=actor.user_id,
            comment="changed: " + ", ".join(changed),
        )
        record_event(
            session,
            "org.updated",
            {
                "org_id": str(org.id),
                "parent_id": str(org.parent_id) if org.parent_id else None,
                "changed": changed,
            },
            aggregate_id=str(org.id),
        )
    return org_read(org, parent)


async def _new_parent(
    session: AsyncSession, scope: Scope, org: Organization, parent_id: uuid.UUID | None
) -> Organization | None:
    """Where a move takes `org`: None for a root (admins only), otherwise a parent in the
    caller's scope that is not `org` itself nor below it."""
    if parent_id is None:
        require_whole_tree(scope)
        return None
    parent = await _load_parent(session, parent_id, scope)
    if path_within(parent.path, org.path):
        raise _invalid_parent(
            text("不能移到自身或其下级组织之下", "Cannot move under itself or its subtree")
        )
    return parent


async def _move(session: AsyncSession, org: Organization, parent: Organization | None) -> None:
    """Hang `org` under `parent` (None: make it a root) and rewrite its subtree's paths."""
    old_path = org.path
    new_depth = parent.depth + 1 if parent else 0
    new_path = child_path(parent.path if parent else None, org.id)
    delta = new_depth - org.depth
    _check_depth(await repo.subtree_max_depth(session, old_path) + delta)
    await repo.lock_subtree(session, old_path)
    org.parent_id = parent.id if parent else None
    await session.flush()
    await repo.rewrite_subtree_paths(session, old_path, new_path, delta)
    set_committed_value(org, "path", new_path)
    set_committed_value(org, "depth", new_depth)


def _apply_fields(org: Organization, data: OrgUpdate) -> list[str]:
    """Set the plain fields and the location that were sent; the names of those that changed."""
    sent = data.model_fields_set
    changed: list[str] = []
    for name in _SCALARS:
        if name in sent:
            value = getattr(data, name)
            if getattr(org, name) != value:
                setattr(org, name, value)
                changed.append(name)
    if "location" in sent:
        lat = data.location.lat if data.location else None
        lng = data.location.lng if data.location else None
        if (org.lat, org.lng) != (lat, lng):
            org.lat, org.lng = lat, lng
            changed.append("location")
    return changed
