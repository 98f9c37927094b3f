"""The shapes of activities, sign-ups and attendance that cross HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from app.core.schema_rules import UNIQUE, required_when
from app.core.text import OneLine
from app.core.validators import Instant
from app.models.activity import (
    ActivityStatus,
    AttendanceMethod,
    AttendanceStatus,
    CoHostStatus,
    Post,
    SignupStatus,
    Visibility,
)

Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120), OneLine
]
Description = Annotated[str, StringConstraints(max_length=5000)]
PlaceName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120), OneLine
]
Address = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), OneLine]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
RadiusM = Annotated[int, Field(ge=50, le=5000, description="Geofence radius in metres")]
Capacity = Annotated[int, Field(ge=1, le=100_000)]
ServiceHours = Annotated[
    float, Field(ge=0, le=24, multiple_of=0.5, description="Credited per attendee, steps of 0.5")
]
CoHosts = Annotated[
    list[uuid.UUID],
    Field(
        max_length=20,
        description=(
            "Co-host organizations.  One the caller acts for as an officer (their subtree) "
            "co-hosts at once; any other is invited and opens the activity to its members only "
            "once an officer of it accepts (`/orgs/{org_id}/co-host-invitations`).  On update, "
            "the whole list: co-hosts left out are dropped, those kept keep where they stand"
        ),
    ),
]


class Category(StrEnum):
    """What kind of activity (活动共搞)."""

    study = "study"  # 学习教育
    volunteer = "volunteer"  # 志愿服务
    org_life = "org_life"  # 组织生活
    coordination = "coordination"  # 党建工作协调会
    other = "other"


class LocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PlaceName
    address: Address | None = None
    lat: Latitude
    lng: Longitude
    radius_m: RadiusM = 200


class LocationOut(BaseModel):
    name: str
    address: str | None
    lat: float
    lng: float
    radius_m: int


class ActivityCreate(BaseModel):
    """A new activity, created as a draft.  `ends_at` after `starts_at`; `signup_deadline`
    (if any) not after `starts_at`; `capacity` null means unlimited."""

    model_config = ConfigDict(extra="forbid")

    org_id: uuid.UUID
    co_host_org_ids: CoHosts = Field(default_factory=list)
    title: Title
    description: Description = ""
    category: Category
    starts_at: Instant
    ends_at: Instant
    location: LocationIn
    capacity: Capacity | None = None
    signup_deadline: Instant | None = None
    visibility: Visibility = Visibility.org
    service_hours: ServiceHours = 0
    post: Post = Post.community


class CoHostRead(BaseModel):
    org_id: uuid.UUID
    status: CoHostStatus = Field(
        description="`accepted` opens the activity to its members; `pending` awaits an officer "
        "of the organization; `declined` was refused by one"
    )


class ActivityUpdate(BaseModel):
    """Fields to change; an absent field keeps its value, `null` clears `capacity` (no limit)
    or `signup_deadline`.  Raising the capacity promotes from the waitlist."""

    model_config = ConfigDict(extra="forbid")

    co_host_org_ids: CoHosts | None = None
    title: Title | None = None
    description: Description | None = None
    category: Category | None = None
    starts_at: Instant | None = None
    ends_at: Instant | None = None
    location: LocationIn | None = None
    capacity: Capacity | None = None
    signup_deadline: Instant | None = None
    visibility: Visibility | None = None
    service_hours: ServiceHours | None = None
    post: Post | None = None


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class MySignup(BaseModel):
    """The caller's active sign-up, if any."""

    id: uuid.UUID
    status: SignupStatus
    waitlist_position: int | None = Field(
        default=None, description="1 = next to be promoted; only when waitlisted"
    )


class ActivityListItem(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    title: str
    category: str
    starts_at: datetime
    ends_at: datetime
    location: LocationOut
    capacity: int | None
    seats_left: int | None = Field(description="null when there is no capacity limit")
    waitlist_count: int
    signup_deadline: datetime | None
    visibility: Visibility
    service_hours: float
    post: Post
    status: ActivityStatus
    my_signup: MySignup | None
    distance_m: float | None = Field(default=None, description="Only with `near`")


class ActivityRead(ActivityListItem):
    description: str
    co_host_org_ids: list[uuid.UUID] = Field(
        description="The co-hosts named: to the officers running it every one (as sent on "
        "update), to members the accepted ones only"
    )
    co_hosts: list[CoHostRead] = Field(description="The same, with where each invitation stands")
    confirmed_count: int
    published_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime


class SignupRead(BaseModel):
    id: uuid.UUID
    activity_id: uuid.UUID
    status: SignupStatus
    waitlist_position: int | None = Field(default=None, description="Only when waitlisted")
    created_at: datetime


class CoHostHost(BaseModel):
    id: uuid.UUID
    name: str


class CoHostInvitationRead(BaseModel):
    """An organization named co-host of another's activity, as its officers see it."""

    activity_id: uuid.UUID
    org_id: uuid.UUID = Field(description="The invited (co-host) organization")
    status: CoHostStatus
    title: str
    host: CoHostHost
    starts_at: datetime
    ends_at: datetime
    visibility: Visibility
    activity_status: ActivityStatus
    invited_at: datetime
    invited_by: uuid.UUID | None
    decided_at: datetime | None
    decided_by: uuid.UUID | None


class ActivitySummary(BaseModel):
    id: uuid.UUID
    title: str
    starts_at: datetime
    ends_at: datetime
    location_name: str
    status: ActivityStatus


class MySignupItem(BaseModel):
    id: uuid.UUID
    status: SignupStatus
    waitlist_position: int | None
    created_at: datetime
    activity: ActivitySummary
    attendance_status: AttendanceStatus | None


class AttendanceBrief(BaseModel):
    status: AttendanceStatus
    method: AttendanceMethod
    attended_at: datetime


class RosterItem(BaseModel):
    signup_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    phone_masked: str
    status: SignupStatus
    waitlist_position: int | None
    created_at: datetime
    attendance: AttendanceBrief | None


class AttendanceCode(BaseModel):
    code: str = Field(description="Show as a QR code or for typing; rotates every 30 s")
    expires_at: datetime = Field(description="When the next code takes over")
    window_seconds: int


# Either a code, or all three parts of a location fix: the rule `attendance` checks, declared.
CODE_OR_FIX: dict[str, Any] = {
    "anyOf": [
        {
            "required": ["code"],
            "properties": {
                "code": {"type": "string"},
                "lat": {"type": "null"},
                "lng": {"type": "null"},
                "accuracy_m": {"type": "null"},
            },
        },
        {
            "required": ["lat", "lng", "accuracy_m"],
            "properties": {
                "code": {"type": "null"},
                "lat": {"type": "number"},
                "lng": {"type": "number"},
                "accuracy_m": {"type": "number"},
            },
        },
    ]
}


class AttendanceCreate(BaseModel):
    """Either `{code}` (the rotating code shown on site) or `{lat, lng, accuracy_m}` (a
    location fix inside the geofence).  `scanned_at`: when the scan or fix was taken, for
    check-ins sent later from a weak network: at most 24 h back and not in the future (422
    beyond 2 minutes of clock skew).  A check-in received more than
    `QUYU_ATTENDANCE_LATE_AFTER_SECONDS` (300) after `scanned_at`, or more than
    `QUYU_ATTENDANCE_END_GRACE_SECONDS` (300) after the activity ended, is recorded `pending`
    and credits nothing until an officer of the host confirms it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=CODE_OR_FIX)

    code: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=32), OneLine] | None
    ) = None
    lat: Latitude | None = None
    lng: Longitude | None = None
    accuracy_m: Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)] | None = None
    scanned_at: Instant | None = None


class MarkStatus(StrEnum):
    """What an officer marks by hand."""

    present = "present"
    absent = "absent"


class AttendanceMark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: MarkStatus


DelaySeconds = Field(
    description="How long after `attended_at` (the scan) the server received the check-in"
)


class AttendanceRead(BaseModel):
    id: uuid.UUID
    activity_id: uuid.UUID
    user_id: uuid.UUID
    status: AttendanceStatus = Field(
        description="`pending`: sent late (or a code check-in by an officer who runs the "
        "activity); it credits nothing until an officer of the host confirms it"
    )
    method: AttendanceMethod
    attended_at: datetime
    recorded_at: datetime
    delay_seconds: int | None = DelaySeconds
    credited_hours: float = Field(
        description="Service hours credited for this activity: at most the part of its time "
        "not already credited for another activity, and what is left of the day's 24 hours"
    )


class AttendanceActivity(BaseModel):
    id: uuid.UUID
    title: str
    starts_at: datetime
    ends_at: datetime


class AttendanceMember(BaseModel):
    id: uuid.UUID
    name: str
    phone_masked: str


class AttendanceQueueItem(BaseModel):
    """An attendance record as the host's officers review it."""

    id: uuid.UUID
    activity: AttendanceActivity
    org_id: uuid.UUID
    member: AttendanceMember
    status: AttendanceStatus
    method: AttendanceMethod
    attended_at: datetime
    recorded_at: datetime
    delay_seconds: int | None = DelaySeconds
    decided_at: datetime | None
    decided_by: uuid.UUID | None
    decision_comment: str | None


MAX_BATCH = 100


class AttendanceReview(BaseModel):
    """Confirm (present, hours credited) or reject (absent) pending check-ins at once."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra=required_when("decision", ["reject"], "comment")
    )

    ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BATCH, json_schema_extra=UNIQUE)
    decision: Literal["confirm", "reject"]
    comment: Comment | None = Field(
        default=None, description="The decision's comment; required (the reason) to reject"
    )

    @field_validator("ids")
    @classmethod
    def _unique(cls, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        return ids


class AttendanceReviewResult(BaseModel):
    id: uuid.UUID
    ok: bool
    status: AttendanceStatus | None = Field(
        default=None, description="The record's state after the call (when visible)"
    )
    code: str | None = Field(
        default=None,
        description="Why it failed: `not_found`, `invalid_transition` or `review_own_forbidden`",
    )


class AttendanceReviewResponse(BaseModel):
    results: list[AttendanceReviewResult]
