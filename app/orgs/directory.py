"""The organization directory: browsing the tree (filters, tree order, or nearest first
around a point) and reading one organization.  Open to every signed-in person; a city client
reads it by its `orgs:read` scope (`app.authz.directory_scope`)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import Principal, directory_scope, load_org_in_scope
from app.core.errors import AppError, ValidationFailed
from app.core.geo import Near, distance_m, parse_near
from app.core.i18n import text
from app.core.pagination import Page, PageParams, page_of
from app.models.enums import OrgKind
from app.orgs import repository as repo
from app.orgs.schemas import OrgListItem, OrgRead
from app.orgs.views import org_list_item, org_read

MAX_RADIUS_KM = 50.0
DEFAULT_RADIUS_KM = 5.0
# With `near`, at most this many bounding-box rows (closest first by a planar estimate) are
# ranked by their exact distance; far more than the largest page.
NEAR_CANDIDATES = 500


def _near(near: str | None, radius_km: float | None, cursor: str | None) -> Near | None:
    """`near=lat,lng` and `radius_km` (at most MAX_RADIUS_KM); 422 on anything malformed.
    Results sorted by distance are one page: with `near` a cursor is refused."""
    if radius_km is not None and radius_km > MAX_RADIUS_KM:
        raise ValidationFailed(
            "radius_km",
            text(f"半径不能超过 {MAX_RADIUS_KM:g} 公里", f"At most {MAX_RADIUS_KM:g} km"),
        )
    if near is not None and cursor is not None:
        raise AppError(
            "invalid_cursor",
            detail=text(
                "按距离排序时只有一页，不能使用游标", "Results sorted by distance have no cursor"
            ),
            errors=[{"field": "cursor", "message": "near"}],
        )
    return parse_near(near, radius_km, default_km=DEFAULT_RADIUS_KM)


async def list_orgs(
    session: AsyncSession,
    principal: Principal,
    params: PageParams,
    *,
    parent_id: uuid.UUID | None = None,
    kind: OrgKind | None = None,
    region_type: str | None = None,
    q: str | None = None,
    near: str | None = None,
    radius_km: float | None = None,
) -> Page[OrgListItem]:
    """Without `near`, a page in tree order; with it, ONE page of the organizations within
    the radius, nearest first (great-circle distance), with no next cursor."""
    point = _near(near, radius_km, params.cursor)
    scope = await directory_scope(session, principal)
    filters = repo.OrgFilters(parent_id=parent_id, kind=kind, region_type=region_type, q=q)
    if point is None:
        rows = await repo.orgs_page(session, scope, filters, params)
        items, next_cursor = page_of(rows, params, lambda r: (r.path,))
        return Page(items=[org_list_item(r) for r in items], next_cursor=next_cursor)

    candidates = await repo.orgs_near(session, scope, filters, point, NEAR_CANDIDATES)
    ranked = sorted(
        (
            (distance_m(point.lat, point.lng, r.lat, r.lng), r.id.hex, r)
            for r in candidates
            if r.lat is not None and r.lng is not None
        ),
        key=lambda t: (t[0], t[1]),
    )
    return Page(
        items=[
            org_list_item(r, round(d / 1000, 3))
            for d, _, r in ranked[: params.limit]
            if d <= point.radius_m
        ],
        next_cursor=None,
    )


async def get_org(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> OrgRead:
    """One organization with a summary of its parent (404 when it does not exist, 403 for a
    city client bound to another subtree)."""
    scope = await directory_scope(session, principal)
    found = await repo.get_org_with_parent(session, org_id)
    # The organization is now in the session: authz decides on it without a second query.
    org = await load_org_in_scope(session, org_id, scope)
    return org_read(org, found.parent if found is not None else None)
