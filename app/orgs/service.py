"""Rules of the organization tree and its officers.  No FastAPI, no commit: the request's
session commits once after the endpoint returns; this module only flushes."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, and_, func, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.authz import (
    Principal,
    directory_scope,
    load_org_in_scope,
    officer_scope,
    require_officer_above,
    require_officer_of,
)
from app.core.audit import audit
from app.core.crypto import mask_phone
from app.core.errors import AppError, Forbidden, NotFound, ValidationFailed, register_codes
from app.core.i18n import text
from app.core.outbox import record_event
from app.core.pagination import Page, PageParams, keyset, page_of
from app.models.enums import OrgKind
from app.models.organization import Officer, Organization
from app.models.user import User
from app.orgs import repository as repo
from app.orgs.schemas import (
    Location,
    OfficerCreate,
    OfficerRead,
    OrgCreate,
    OrgListItem,
    OrgRead,
    OrgSummary,
    OrgUpdate,
)
from app.orgs.tree import child_path

register_codes(
    {
        "invalid_parent": (422, "上级组织无效", "The parent organization is not valid"),
        "officer_exists": (
            409,
            "该用户已是此组织的工作人员",
            "The user already serves this organization",
        ),
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

EARTH_RADIUS_KM = 6371.0088
_KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180
MAX_RADIUS_KM = 50.0
DEFAULT_RADIUS_KM = 5.0
# With `near`, at most this many bounding-box rows (closest first by a planar estimate) are
# ranked by their exact distance; far more than the largest page.
NEAR_CANDIDATES = 500


# --- the directory ----------------------------------------------------------------------


@dataclass(frozen=True)
class Near:
    lat: float
    lng: float
    radius_km: float


@dataclass(frozen=True)
class OrgFilters:
    parent_id: uuid.UUID | None = None
    kind: OrgKind | None = None
    region_type: str | None = None
    q: str | None = None
    near: Near | None = None


def parse_near(near: str | None, radius_km: float | None, cursor: str | None) -> Near | None:
    """`near=lat,lng` (degrees) and `radius_km`; 422 on anything malformed."""
    if near is None:
        if radius_km is not None:
            raise ValidationFailed("radius_km", text("需与 near 一起使用", "radius_km needs near"))
        return None
    if cursor is not None:
        raise ValidationFailed(
            "cursor",
            text("按距离排序时只有一页，不能使用游标", "Results sorted by distance have no cursor"),
        )
    parts = near.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(near)
        lat, lng = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise ValidationFailed("near", text("格式应为 纬度,经度", "Expected near=lat,lng")) from exc
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise ValidationFailed("near", text("纬度应在 -90 到 90 之间", "lat must be in -90..90"))
    if not (math.isfinite(lng) and -180 <= lng <= 180):
        raise ValidationFailed(
            "near", text("经度应在 -180 到 180 之间", "lng must be in -180..180")
        )
    return Near(lat=lat, lng=lng, radius_km=radius_km or DEFAULT_RADIUS_KM)


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _near_clauses(near: Near) -> tuple[list[Any], Any]:
    """A bounding box (WHERE) around the circle and a planar squared-distance estimate
    (ORDER BY): plain arithmetic, so that it runs on SQLite and PostgreSQL alike."""
    lat, lng = Organization.lat, Organization.lng
    dlat = near.radius_km / _KM_PER_DEGREE
    where: list[Any] = [lat.between(near.lat - dlat, near.lat + dlat)]
    cos_lat = math.cos(math.radians(near.lat))
    if abs(near.lat) + dlat < 90 and cos_lat > 0:
        dlng = dlat / cos_lat
        if dlng < 180:
            low, high = near.lng - dlng, near.lng + dlng
            if low < -180:  # the box crosses the antimeridian
                where.append(or_(lng >= low + 360, lng <= high))
            elif high > 180:
                where.append(or_(lng >= low, lng <= high - 360))
            else:
                where.append(lng.between(low, high))
    else:  # a polar cap: every longitude
        where.append(lng.is_not(None))
    dy = lat - near.lat
    dx = (lng - near.lng) * cos_lat
    return where, dy * dy + dx * dx


def _location(lat: float | None, lng: float | None) -> Location | None:
    if lat is None or lng is None:
        return None
    return Location(lat=lat, lng=lng)


def _list_item(row: Row[Any], distance_km: float | None = None) -> OrgListItem:
    return OrgListItem(
        id=row.id,
        name=row.name,
        kind=row.kind,
        level=row.level,
        region_type=row.region_type,
        address=row.address,
        location=_location(row.lat, row.lng),
        parent_id=row.parent_id,
        depth=row.depth,
        distance_km=distance_km,
    )


async def list_orgs(
    session: AsyncSession, principal: Principal, filters: OrgFilters, params: PageParams
) -> Page[OrgListItem]:
    scope = await directory_scope(session, principal)
    stmt = repo.LIST_ORGS.where(scope.clause())
    if filters.parent_id is not None:
        stmt = stmt.where(Organization.parent_id == filters.parent_id)
    if filters.kind is not None:
        stmt = stmt.where(Organization.kind == filters.kind)
    if filters.region_type is not None:
        stmt = stmt.where(Organization.region_type == filters.region_type)
    if filters.q:
        stmt = stmt.where(
            func.lower(Organization.name).contains(filters.q.lower(), autoescape=True)
        )
    near = filters.near
    if near is None:
        rows = await repo.fetch(session, keyset(stmt, [Organization.path], params))
        items, next_cursor = page_of(rows, params, lambda r: (r.path,))
        return Page(items=[_list_item(r) for r in items], next_cursor=next_cursor)

    where, estimate = _near_clauses(near)
    stmt = stmt.where(and_(*where)).order_by(estimate, Organization.id).limit(NEAR_CANDIDATES)
    ranked = sorted(
        (
            (haversine_km(near.lat, near.lng, r.lat, r.lng), r.id.hex, r)
            for r in await repo.fetch(session, stmt)
        ),
        key=lambda t: (t[0], t[1]),
    )
    return Page(
        items=[
            _list_item(r, round(d, 3)) for d, _, r in ranked[: params.limit] if d <= near.radius_km
        ],
        next_cursor=None,
    )


async def get_org(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> OrgRead:
    scope = await directory_scope(session, principal)
    row = await repo.get_org_with_parent(session, org_id)
    if row is None:
        raise NotFound()
    org, parent_id, parent_name = row
    if not scope.covers_path(org.path):
        raise Forbidden()
    parent = OrgSummary(id=parent_id, name=parent_name) if parent_id and parent_name else None
    return _read(org, parent)


def _read(org: Organization, parent: OrgSummary | None) -> OrgRead:
    return OrgRead(
        id=org.id,
        name=org.name,
        kind=OrgKind(org.kind),
        level=org.level,
        region_type=org.region_type,
        founding_form=org.founding_form,
        address=org.address,
        location=_location(org.lat, org.lng),
        parent_id=org.parent_id,
        parent=parent,
        depth=org.depth,
        created_at=org.created_at,
        updated_at=org.updated_at,
    )


# --- writing the tree -------------------------------------------------------------------


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


async def _load_parent(session: AsyncSession, parent_id: uuid.UUID) -> Organization:
    parent = await repo.get_org_locked(session, parent_id)
    if parent is None:
        raise _invalid_parent(text("上级组织不存在", "No such organization"))
    return parent


async def create_org(session: AsyncSession, principal: Principal, data: OrgCreate) -> OrgRead:
    scope = await officer_scope(session, principal)
    parent: Organization | None = None
    if data.parent_id is not None:
        parent = await _load_parent(session, data.parent_id)
        if not scope.covers_path(parent.path):
            raise Forbidden()
    elif not scope.everything:
        raise Forbidden()  # a root organization is created by an admin only
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
        actor_id=principal.user_id,
    )
    record_event(
        session,
        "org.created",
        {"org_id": str(org.id), "parent_id": str(parent.id) if parent else None},
        aggregate_id=str(org.id),
    )
    return _read(org, OrgSummary(id=parent.id, name=parent.name) if parent else None)


_SCALARS = ("name", "kind", "level", "region_type", "founding_form", "address")


async def update_org(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, data: OrgUpdate
) -> OrgRead:
    scope = await officer_scope(session, principal)
    org = await load_org_in_scope(session, org_id, scope)
    # Re-read it row-locked (PostgreSQL) so that a concurrent move cannot change its path.
    await repo.get_org_locked(session, org_id, exclusive=True)
    if not scope.covers_path(org.path):
        raise Forbidden()
    sent = data.model_fields_set
    moving = "parent_id" in sent and data.parent_id != org.parent_id

    kind = OrgKind(data.kind) if "kind" in sent and data.kind else OrgKind(org.kind)
    region_type = data.region_type if "region_type" in sent else org.region_type
    founding_form = data.founding_form if "founding_form" in sent else org.founding_form

    parent: Organization | None = None
    if moving:
        if data.parent_id is None:
            if not scope.everything:
                raise Forbidden()  # only an admin makes a root
        else:
            parent = await _load_parent(session, data.parent_id)
            if not scope.covers_path(parent.path):
                raise Forbidden()
            if parent.path.startswith(org.path):
                raise _invalid_parent(
                    text("不能移到自身或其下级组织之下", "Cannot move under itself or its subtree")
                )
    elif org.parent_id is not None:
        parent = await session.get(Organization, org.parent_id)

    _check_parent_kind(kind, parent.kind if parent else None)
    _check_fields(kind, region_type, founding_form)
    if kind != org.kind:
        for child in await repo.child_kinds(session, org.id):
            if kind not in ALLOWED_PARENTS[OrgKind(child)]:
                raise ValidationFailed(
                    "kind",
                    text(
                        f"下级组织（{child}）不能隶属于 {kind}",
                        f"Its {child} children cannot belong to a {kind}",
                    ),
                )

    changed: list[str] = []
    if moving:
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
        changed.append("parent_id")

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

    if changed:
        await session.flush()
        audit(
            session,
            action="org.updated",
            object_type="organization",
            object_id=org.id,
            org_id=org.id,
            actor_id=principal.user_id,
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
    return _read(org, OrgSummary(id=parent.id, name=parent.name) if parent else None)


# --- officers ---------------------------------------------------------------------------


def _officer_read(row: Any) -> OfficerRead:
    return OfficerRead(
        id=row.id,
        org_id=row.org_id,
        user_id=row.user_id,
        name=row.name,
        phone_masked=mask_phone(row.phone),
        role=row.role,
        appointed_by=row.appointed_by,
        created_at=row.created_at,
    )


async def list_officers(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, params: PageParams
) -> Page[OfficerRead]:
    org = await require_officer_of(session, principal, org_id)
    stmt = keyset(
        repo.LIST_OFFICERS.where(Officer.org_id == org.id),
        [Officer.created_at, Officer.id],
        params,
    )
    rows = await repo.fetch(session, stmt)
    items, next_cursor = page_of(rows, params, lambda r: (r.created_at, r.id))
    return Page(items=[_officer_read(r) for r in items], next_cursor=next_cursor)


async def appoint_officer(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, data: OfficerCreate
) -> OfficerRead:
    org = await require_officer_above(session, principal, org_id)
    user = await session.get(User, data.user_id)
    if user is None or not user.is_active:
        raise ValidationFailed("user_id", text("用户不存在", "No such user"))
    officer = Officer(
        id=uuid.uuid4(),
        org_id=org.id,
        user_id=user.id,
        role=data.role,
        appointed_by=data.appointed_by,
    )
    try:
        async with session.begin_nested():
            session.add(officer)
    except IntegrityError as exc:  # uq_officers_org_id_user_id: no read-then-write
        raise AppError("officer_exists") from exc
    audit(
        session,
        action="org.officer_appointed",
        object_type="officer",
        object_id=officer.id,
        org_id=org.id,
        actor_id=principal.user_id,
        to_state=data.role,
    )
    record_event(
        session,
        "org.officer_appointed",
        {
            "org_id": str(org.id),
            "officer_id": str(officer.id),
            "user_id": str(user.id),
            "role": str(data.role),
        },
        aggregate_id=str(org.id),
    )
    (row,) = await repo.fetch(session, repo.LIST_OFFICERS.where(Officer.id == officer.id))
    return _officer_read(row)


async def remove_officer(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, officer_id: uuid.UUID
) -> None:
    org = await require_officer_above(session, principal, org_id)
    officer = await repo.get_officer(session, org.id, officer_id)
    if officer is None:
        raise NotFound()
    await session.delete(officer)
    await session.flush()
    audit(
        session,
        action="org.officer_removed",
        object_type="officer",
        object_id=officer.id,
        org_id=org.id,
        actor_id=principal.user_id,
        from_state=officer.role,
    )
    record_event(
        session,
        "org.officer_removed",
        {"org_id": str(org.id), "officer_id": str(officer.id), "user_id": str(officer.user_id)},
        aggregate_id=str(org.id),
    )
