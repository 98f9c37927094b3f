"""The shapes of dual-post contributions (双岗位) that cross HTTP."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from app.core.i18n import text
from app.core.schema_rules import UNIQUE, required_when
from app.core.text import OneLine
from app.core.validators import Day
from app.models.activity import Post
from app.models.contribution import ContributionSource, ContributionStatus
from app.review.preconditions import ETagValue, if_match_among_ids

Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), OneLine
]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
CategoryCode = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40), OneLine
]
Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]

MAX_BATCH = 100
MAX_HOURS_PER_DAY = 24
# What `_check_hours` accepts, declared.
HOURS_SCHEMA: dict[str, Any] = {"exclusiveMinimum": 0, "maximum": 24, "multipleOf": 0.5}


def half_hours_of(hours: float) -> int:
    """Hours (a multiple of 0.5) as whole half-hours."""
    return round(hours * 2)


def _check_hours(hours: float) -> float:
    if not hours > 0:
        raise ValueError(text("时长须大于 0", "Hours must be positive"))
    if hours > MAX_HOURS_PER_DAY:
        raise ValueError(text("时长不能超过 24 小时", "At most 24 hours"))
    if abs(hours * 2 - round(hours * 2)) > 1e-9:
        raise ValueError(text("时长须以 0.5 小时为单位", "Hours come in steps of 0.5"))
    return round(hours * 2) / 2


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _category_of_its_post(schema: dict[str, Any]) -> None:
    """A category is one of its post's (GET /contribution-categories), declared."""
    from app.contributions.categories import CATEGORIES

    schema.setdefault("allOf", []).extend(
        {
            "if": {"properties": {"post": {"const": post.value}}, "required": ["post"]},
            "then": {"properties": {"category": {"enum": [c.code for c in categories]}}},
        }
        for post, categories in CATEGORIES.items()
    )


class ContributionCreate(_Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_category_of_its_post)

    post: Post = Field(description="enterprise (企业职责岗) or community (社会义务岗)")
    category: CategoryCode = Field(description="A code of GET /contribution-categories")
    title: Title
    description: Description | None = None
    occurred_on: Day = Field(description="Local (Asia/Shanghai) date; not in the future")
    hours: float = Field(
        description="Positive, in steps of 0.5; at most 24 a day per member",
        json_schema_extra=HOURS_SCHEMA,
    )
    org_id: uuid.UUID = Field(
        description=(
            "An organization where the member holds an approved check-in (the record "
            "organization of PATCH /me does not count: it is not confirmed)"
        )
    )

    _hours = field_validator("hours")(_check_hours)


class ContributionUpdate(_Input):
    """Any subset of the fields; a returned record goes back to pending."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_category_of_its_post)

    post: Post | None = None
    category: CategoryCode | None = None
    title: Title | None = None
    description: Description | None = None
    occurred_on: Day | None = None
    hours: float | None = Field(default=None, json_schema_extra=HOURS_SCHEMA)
    org_id: uuid.UUID | None = None

    @field_validator("hours")
    @classmethod
    def _hours(cls, hours: float | None) -> float | None:
        return None if hours is None else _check_hours(hours)


class ContributionApprove(_Input):
    comment: Comment | None = None


class ContributionReasoned(_Input):
    reason: Reason = Field(description="Why, shown to the member (required)")


class ContributionReview(_Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=required_when("decision", ["reject", "return"], "comment"),
    )

    ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BATCH, json_schema_extra=UNIQUE)
    decision: Literal["approve", "reject", "return"]
    comment: Comment | None = Field(
        default=None,
        description="The decision's comment; required (the reason) to reject or return",
    )
    if_match: dict[uuid.UUID, ETagValue] | None = Field(
        default=None,
        max_length=MAX_BATCH,
        description=(
            "Per id, the record's ETag as read (its queue item's `etag`): a record changed "
            "since is not decided and gets `precondition_failed`; ids left out are decided "
            "as they are"
        ),
    )

    @field_validator("ids")
    @classmethod
    def _unique(cls, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        if len(set(ids)) != len(ids):
            raise ValueError(text("ID 不能重复", "ids must be unique"))
        return ids

    _if_match_of_ids = field_validator("if_match")(if_match_among_ids)


class CategoryRead(BaseModel):
    code: str
    name: str = Field(description="In the language of the request")
    name_zh: str
    name_en: str


class PostCategories(BaseModel):
    post: Post
    name: str
    name_zh: str
    name_en: str
    categories: list[CategoryRead]


class CategoriesRead(BaseModel):
    posts: list[PostCategories]


class OrgRef(BaseModel):
    id: uuid.UUID
    name: str


class ContributionRead(BaseModel):
    """A record as its member sees it; `source` activity records are attendance credits."""

    id: uuid.UUID
    source: ContributionSource
    status: ContributionStatus
    post: Post
    category: str
    title: str
    description: str | None
    occurred_on: date
    hours: float
    org: OrgRef
    activity_id: uuid.UUID | None = None
    attachment_count: int
    submitted_at: datetime
    decided_at: datetime | None
    decision_comment: str | None


class MemberCard(BaseModel):
    id: uuid.UUID
    name: str
    phone_masked: str


class ContributionQueueItem(ContributionRead):
    """A record as an officer sees it: enough to decide on a phone."""

    member: MemberCard
    possible_duplicate: bool = Field(
        description="An attendance credit of the same member and day exists"
    )
    decided_by: uuid.UUID | None
    etag: str | None = Field(
        description=(
            "The record's ETag, new with every edit: send it as `If-Match` (or in a batch's "
            "`if_match`) to decide the record only as read; null for activity credits"
        )
    )


class ReviewResult(BaseModel):
    id: uuid.UUID
    ok: bool
    status: ContributionStatus | None = Field(
        default=None, description="The record's state after the call (when visible)"
    )
    code: str | None = Field(
        default=None,
        description=(
            "Why it failed: `not_found`, `invalid_transition`, `review_own_forbidden`, "
            "`precondition_failed` or `daily_hours_exceeded` (approving it would pass 24 "
            "approved hours that day)"
        ),
    )


class ReviewResponse(BaseModel):
    results: list[ReviewResult]


class SummaryCell(BaseModel):
    post: Post
    status: ContributionStatus
    count: int
    hours: float


class PostTotal(BaseModel):
    post: Post
    approved_hours: float
    approved_count: int


class SummaryRead(BaseModel):
    year: int
    items: list[SummaryCell] = Field(description="Per post and status (activity credits approved)")
    totals: list[PostTotal] = Field(description="Approved hours and counts per post")
