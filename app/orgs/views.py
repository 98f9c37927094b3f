"""How organizations and officers are shown: rows and models turned into the shapes of
`schemas.py`."""

from __future__ import annotations

from app.core.crypto import mask_phone
from app.models.enums import OrgKind
from app.models.organization import Organization
from app.orgs.repository import OfficerRow, OrgRow, ParentRow
from app.orgs.schemas import Location, OfficerRead, OrgListItem, OrgRead, OrgSummary


def location(lat: float | None, lng: float | None) -> Location | None:
    if lat is None or lng is None:
        return None
    return Location(lat=lat, lng=lng)


def org_list_item(row: OrgRow, distance_km: float | None = None) -> OrgListItem:
    return OrgListItem(
        id=row.id,
        name=row.name,
        kind=OrgKind(row.kind),
        level=row.level,
        region_type=row.region_type,
        address=row.address,
        location=location(row.lat, row.lng),
        parent_id=row.parent_id,
        depth=row.depth,
        distance_km=distance_km,
    )


def org_read(org: Organization, parent: Organization | ParentRow | None) -> OrgRead:
    return OrgRead(
        id=org.id,
        name=org.name,
        kind=OrgKind(org.kind),
        level=org.level,
        region_type=org.region_type,
        founding_form=org.founding_form,
        address=org.address,
        location=location(org.lat, org.lng),
        parent_id=org.parent_id,
        parent=OrgSummary(id=parent.id, name=parent.name) if parent is not None else None,
        depth=org.depth,
        created_at=org.created_at,
        updated_at=org.updated_at,
    )


def officer_read(row: OfficerRow) -> OfficerRead:
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
