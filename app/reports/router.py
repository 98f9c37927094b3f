"""HTTP of reports: the figures of a subtree and its spreadsheets."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse

from app.authz.guards import CurrentMember, OfficerOrg, officer_or_client_org
from app.core.openapi import problems
from app.core.validators import IsoDate
from app.deps import DbSession, SessionFactory
from app.models.contribution import ContributionStatus
from app.models.organization import Organization
from app.reports import exports, stats
from app.reports.schemas import ExportFormat, ExportKind, StatsRead

# Both routes are listed under the tags they have always had in the API document.
router = APIRouter(tags=["contributions"])

STATS_READ = "stats:read"

StatsOrg = Annotated[Organization, Depends(officer_or_client_org(STATS_READ))]
OrgId = Annotated[uuid.UUID, Path(description="The organization whose subtree is read")]


@router.get(
    "/orgs/{org_id}/stats",
    response_model=StatsRead,
    responses=problems(401, 403, 404, 422),
    tags=["orgs"],
    summary="Figures of the organization's subtree (officers; city systems with stats:read)",
)
async def orgs_stats(
    org: StatsOrg,
    session: DbSession,
    from_: Annotated[
        IsoDate | None, Query(alias="from", description="First local day (default: 1 January)")
    ] = None,
    to: Annotated[IsoDate | None, Query(description="Last local day (default: today)")] = None,
) -> StatsRead:
    return await stats.org_stats(session, org, from_, to)


_EXPORT_TYPES: dict[str, dict[str, Any]] = {
    "text/csv": {},
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
}


@router.get(
    "/orgs/{org_id}/exports/{kind}",
    response_class=StreamingResponse,
    responses={200: {"content": _EXPORT_TYPES}, **problems(401, 403, 404, 422)},
    tags=["orgs"],
    summary="A spreadsheet of the subtree: members, contributions or attendance",
)
async def orgs_exports_get(
    # Declared here as well as by the guard so that the document lists it before `kind`.
    org_id: OrgId,
    kind: Annotated[ExportKind, Path(description="members, contributions or attendance")],
    org: OfficerOrg,
    session: DbSession,
    factory: SessionFactory,
    principal: CurrentMember,
    format: Annotated[ExportFormat, Query(description="xlsx (default) or csv")] = "xlsx",
    status: Annotated[
        ContributionStatus | None, Query(description="contributions: only this state")
    ] = None,
    from_: Annotated[IsoDate | None, Query(alias="from", description="First local day")] = None,
    to: Annotated[IsoDate | None, Query(description="Last local day")] = None,
) -> StreamingResponse:
    """Phone and ID numbers masked, headers in Chinese; every export is written to the audit
    log (who exported what, PIPL)."""
    export = exports.start(
        session,
        factory,
        principal.person,
        org,
        kind,
        format,
        status=status,
        first=from_,
        last=to,
    )
    return StreamingResponse(
        export.chunks,
        media_type=export.media_type,
        headers={
            "Content-Disposition": (
                f'attachment; filename="{export.ascii_name}"; '
                f"filename*=UTF-8''{quote(export.filename)}"
            ),
            "Cache-Control": "no-store",
        },
    )
