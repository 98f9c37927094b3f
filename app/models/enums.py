"""Closed vocabularies of the domain (see docs/domain.md); values are the API's words."""

from __future__ import annotations

from enum import StrEnum


class OrgKind(StrEnum):
    district = "district"
    street = "street"
    park = "park"
    regional = "regional"
    enterprise = "enterprise"
    building = "building"


class OrgLevel(StrEnum):
    committee = "committee"
    general_branch = "general_branch"
    branch = "branch"


class RegionType(StrEnum):
    community = "community"
    industrial_park = "industrial_park"
    commercial_building = "commercial_building"
    market = "market"
    association = "association"
    migrant_residence = "migrant_residence"


class FoundingForm(StrEnum):
    """How a regional organization was founded besides a plain one: attached to a strong
    organization (挂靠联建), strong with weak (强弱联建), village with firms (村企联建), or by
    trade (行业统建)."""

    attached = "attached"  # 挂靠联建
    strong_weak = "strong_weak"  # 强弱联建
    village_firm = "village_firm"  # 村企联建
    trade = "trade"  # 行业统建


class OfficerRole(StrEnum):
    secretary = "secretary"
    deputy_secretary = "deputy_secretary"
    worker = "worker"


class AppointedBy(StrEnum):
    seconded = "seconded"
    recommended = "recommended"
    hired = "hired"


class PartyStatus(StrEnum):
    full = "full"
    probationary = "probationary"


class Gender(StrEnum):
    male = "male"
    female = "female"


class CheckinStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    withdrawn = "withdrawn"
    left = "left"
