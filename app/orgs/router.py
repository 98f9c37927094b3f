"""HTTP for the organization directory and its officers: parse, call the service, answer."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.authz.guards import CurrentMember, CurrentPrincipal, OfficerScope
from app.core.geo import NEAR_PATTERN
from app.core.openapi import problems
from app.core.pagination import Page
from app.core.urls import public_url
from app.deps import AppSettings, DbSession, Paging
from app.idempotency import IdempotentRoute
from app.models.enums import OrgKind, RegionType
from app.orgs import directory, officers, structure
from app.orgs.schemas import OfficerCreate, OfficerRead, OrgCreate, OrgListItem, OrgRead, OrgUpdate

router = APIRouter(prefix="/orgs", tags=["orgs"], route_class=IdempotentRoute)


@router.get(
    "",
    response_model=Page[OrgListItem],
    responses=problems(401, 403, 422),
    summary="Browse the organization directory",
    description=(
        "Any signed-in member; a city client needs the scope `orgs:read` (and sees the "
        "subtree it is bound to, if any).\n\n"
        "Without `near` the order is the tree order (materialized path, indexed): an "
        "organization comes right before its subtree; page with `cursor`.\n\n"
        "With `near=lat,lng` (degrees) the answer is ONE page of at most `limit` "
        "organizations with a location within `radius_km` (default 5, at most 50), nearest "
        "first, each with `distance_km` (great-circle); `next_cursor` is always null and "
        "`cursor` is refused. Narrow the radius or the filters to see other ones."
    ),
)
async def orgs_list(
    session: DbSession,
    principal: CurrentPrincipal,
    paging: Paging,
    parent_id: uuid.UUID | None = None,
    kind: OrgKind | None = None,
    region_type: RegionType | None = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=50, description="Name contains (any case)")
    ] = None,
    near: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=NEAR_PATTERN,
            description="`lat,lng` in degrees, e.g. `29.6,121.4`",
        ),
    ] = None,
    radius_km: Annotated[
        float | None,
        Query(gt=0, le=directory.MAX_RADIUS_KM, description="With `near`; default 5"),
    ] = None,
) -> Page[OrgListItem]:
    return await directory.list_orgs(
        session,
        principal,
        paging,
        parent_id=parent_id,
        kind=kind,
        region_type=region_type,
        q=q,
        near=near,
        radius_km=radius_km,
    )


@router.get(
    "/{org_id}",
    response_model=OrgRead,
    responses=problems(401, 403, 404, 422),
    summary="One organization, with a summary of its parent",
)
async def orgs_get(session: DbSession, principal: CurrentPrincipal, org_id: uuid.UUID) -> OrgRead:
    return await directory.get_org(session, principal, org_id)


@router.post(
    "",
    response_model=OrgRead,
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 403, 409, 422),
    summary="Found an organization",
    description=(
        "An officer of the parent or of any organization above it, or an admin; a root "
        "(a `district`, without `parent_id`) by an admin only. City clients never write.\n\n"
        "Allowed parents: `district` none; `street`, `park` a district; `regional` a street, "
        "park or district; `enterprise`, `building` a regional organization, an enterprise or "
        "a building (floors, stairwells). Anything else is 422 `invalid_parent`. "
        "`region_type` is required for `regional` and refused on other kinds."
    ),
)
async def orgs_create(
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
    body: OrgCreate,
    request: Request,
    response: Response,
    settings: AppSettings,
) -> OrgRead:
    org = await structure.create_org(session, principal, scope, body)
    response.headers["Location"] = public_url(settings, request, "orgs_get", org_id=org.id)
    return org


@router.patch(
    "/{org_id}",
    response_model=OrgRead,
    responses=problems(401, 403, 404, 422),
    summary="Edit or move an organization",
    description=(
        "An officer whose subtree holds the organization, or an admin. Moving (`parent_id`) "
        "also needs the new parent in the caller's subtree, and moves the whole subtree; "
        "moving under itself or its own subtree is 422 `invalid_parent`."
    ),
)
async def orgs_update(
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
    org_id: uuid.UUID,
    body: OrgUpdate,
) -> OrgRead:
    return await structure.update_org(session, principal, scope, org_id, body)


@router.get(
    "/{org_id}/officers",
    response_model=Page[OfficerRead],
    responses=problems(401, 403, 404, 422),
    summary="Officers of an organization",
    description="Officers whose subtree holds the organization, and admins. Phones are masked.",
)
async def orgs_officers_list(
    session: DbSession, scope: OfficerScope, org_id: uuid.UUID, paging: Paging
) -> Page[OfficerRead]:
    return await officers.list_officers(session, scope, org_id, paging)


@router.post(
    "/{org_id}/officers",
    response_model=OfficerRead,
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 403, 404, 409, 422),
    summary="Appoint an officer",
    description=(
        "An officer of an organization strictly above this one, or an admin. "
        "409 `officer_exists` when the user already serves here; 422 for an unknown user."
    ),
)
async def orgs_officers_create(
    session: DbSession, principal: CurrentMember, org_id: uuid.UUID, body: OfficerCreate
) -> OfficerRead:
    return await officers.appoint_officer(session, principal, org_id, body)


@router.delete(
    "/{org_id}/officers/{officer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 403, 404),
    summary="Remove an officer",
    description="An officer of an organization strictly above this one, or an admin.",
)
async def orgs_officers_delete(
    session: DbSession, principal: CurrentMember, org_id: uuid.UUID, officer_id: uuid.UUID
) -> Response:
    await officers.remove_officer(session, principal, org_id, officer_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
