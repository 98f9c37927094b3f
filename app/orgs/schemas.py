"""The shapes of organizations and officers that cross HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.core.schema_rules import not_nullable
from app.core.text import OneLine
from app.models.enums import (
    AppointedBy,
    FoundingForm,
    OfficerRole,
    OrgKind,
    OrgLevel,
    RegionType,
)

OrgName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), OneLine
]
Address = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), OneLine]


class Location(BaseModel):
    """WGS-84 coordinates in degrees."""

    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)


class OrgCreate(BaseModel):
    """A new organization.

    Where it may hang: a `district` has no parent; `street` and `park` go under a district;
    `regional` under a street, park or district; `enterprise` and `building` under a regional
    organization or under an enterprise or building (floors, stairwells).  `region_type` is
    required for a `regional` organization and not allowed on any other kind;
    `founding_form` is not allowed on districts, streets and parks.
    """

    model_config = ConfigDict(extra="forbid")

    name: OrgName
    kind: OrgKind
    level: OrgLevel | None = None
    region_type: RegionType | None = None
    founding_form: FoundingForm | None = None
    address: Address | None = None
    location: Location | None = None
    parent_id: uuid.UUID | None = None


class OrgUpdate(BaseModel):
    """Fields to change; an absent field keeps its value, `null` clears a nullable one.
    Setting `parent_id` moves the organization with its whole subtree."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=not_nullable("name", "kind"))

    name: OrgName | None = None
    kind: OrgKind | None = None
    level: OrgLevel | None = None
    region_type: RegionType | None = None
    founding_form: FoundingForm | None = None
    address: Address | None = None
    location: Location | None = None
    parent_id: uuid.UUID | None = None

    @field_validator("name", "kind")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only for values that were sent: an explicit null is refused, absence is not.
        if value is None:
            raise ValueError("may not be null")
        return value


class OrgSummary(BaseModel):
    id: uuid.UUID
    name: str


class OrgListItem(BaseModel):
    id: uuid.UUID
    name: str
    kind: OrgKind
    level: OrgLevel | None
    region_type: RegionType | None
    address: str | None
    location: Location | None
    parent_id: uuid.UUID | None
    depth: int = Field(description="0 for a root (district), +1 per level below")
    distance_km: float | None = Field(
        default=None, description="Great-circle distance from `near`; only when `near` is given"
    )


class OrgRead(BaseModel):
    id: uuid.UUID
    name: str
    kind: OrgKind
    level: OrgLevel | None
    region_type: RegionType | None
    founding_form: FoundingForm | None
    address: str | None
    location: Location | None
    parent_id: uuid.UUID | None
    parent: OrgSummary | None
    depth: int
    created_at: datetime
    updated_at: datetime


class OfficerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: uuid.UUID
    role: OfficerRole
    appointed_by: AppointedBy


class OfficerRead(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    phone_masked: str = Field(description="e.g. 138****5678; the full number is never shown")
    role: OfficerRole
    appointed_by: AppointedBy
    created_at: datetime
