"""The shapes of check-ins (登记报到) that cross HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from app.core.schema_rules import UNIQUE, required_when
from app.models.enums import CheckinStatus, OrgKind, PartyStatus
from app.review.preconditions import ETagValue, if_match_among_ids

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]

MAX_BATCH = 100


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckinCreate(_Input):
    org_id: uuid.UUID = Field(
        description="A regional organization, or an enterprise or building organization under one"
    )
    note: Note | None = Field(default=None, description="A word for the secretary")


class CheckinApprove(_Input):
    comment: Comment | None = None


class CheckinReject(_Input):
    reason: Reason = Field(description="Why, shown to the member (required)")


class CheckinReview(_Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra=required_when("decision", ["reject"], "comment")
    )

    ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BATCH, json_schema_extra=UNIQUE)
    decision: Literal["approve", "reject"]
    comment: Comment | None = Field(
        default=None, description="The decision's comment; required (the reason) to reject"
    )
    if_match: dict[uuid.UUID, ETagValue] | None = Field(
        default=None,
        max_length=MAX_BATCH,
        description=(
            "Per id, the check-in's ETag as read (its queue item's `etag`): one changed since "
            "(or whose member's profile changed) is not decided and gets "
            "`precondition_failed`; ids left out are decided as they are"
        ),
    )

    @field_validator("ids")
    @classmethod
    def _unique(cls, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        return ids

    _if_match_of_ids = field_validator("if_match")(if_match_among_ids)


class OrgSummary(BaseModel):
    id: uuid.UUID
    name: str
    kind: OrgKind | None = None


class RecordOrg(BaseModel):
    """组织关系所在: one of our organizations (with its id) or a free-text one elsewhere."""

    id: uuid.UUID | None = None
    name: str | None = None


class CheckinRead(BaseModel):
    """A check-in as its member sees it."""

    id: uuid.UUID
    org: OrgSummary
    status: CheckinStatus
    note: str | None
    floating: bool
    submitted_at: datetime
    decided_at: datetime | None
    decision_comment: str | None
    ended_at: datetime | None


class MemberCard(BaseModel):
    """What a secretary needs about the member, with personal data masked."""

    id: uuid.UUID
    name: str
    phone_masked: str
    party_status: PartyStatus | None
    employer: str | None
    record_org: RecordOrg


class CheckinQueueItem(CheckinRead):
    """A check-in as an officer sees it: enough to decide on a phone without opening it."""

    member: MemberCard
    decided_by: uuid.UUID | None
    etag: str = Field(
        description=(
            "The check-in's ETag, new with every change of it or of its member's profile: "
            "send it as `If-Match` (or in a batch's `if_match`) to decide it only as read"
        )
    )


class ReviewResult(BaseModel):
    id: uuid.UUID
    ok: bool
    status: CheckinStatus | None = Field(
        default=None, description="The check-in's state after the call (when visible)"
    )
    code: str | None = Field(
        default=None,
        description=(
            "Why it failed: `not_found`, `invalid_transition`, `review_own_forbidden` or "
            "`precondition_failed`"
        ),
    )


class ReviewResponse(BaseModel):
    results: list[ReviewResult]


class AuditEntryRead(BaseModel):
    id: uuid.UUID
    created_at: datetime
    action: str
    object_type: str
    object_id: str | None
    org: OrgSummary | None
    actor_id: uuid.UUID | None
    actor_name: str | None
    actor_client_id: str | None
    from_state: str | None
    to_state: str | None
    comment: str | None


class MemberRead(BaseModel):
    """An approved registration (member × organization), personal data masked."""

    checkin_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    phone_masked: str
    id_number_masked: str | None
    gender: str | None
    party_status: PartyStatus | None
    employer: str | None
    post_title: str | None
    record_org: RecordOrg
    floating: bool
    org: OrgSummary
    registered_at: datetime | None = Field(description="When the check-in was approved")
