"""The shapes of activities, sign-ups and attendance that cross HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from app.models.activity import (
    ActivityStatus,
    AttendanceMethod,
    AttendanceStatus,
    Post,
    SignupStatus,
    Visibility,
)

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
Description = Annotated[str, StringConstraints(max_length=5000)]
PlaceName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
Address = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
RadiusM = Annotated[int, Field(ge=50, le=5000, description="Geofence radius in metres")]
Capacity = Annotated[int, Field(ge=1, le=100_000)]
ServiceHours = Annotated[
    float, Field(ge=0, le=24, multiple_of=0.5, description="Credited per attendee, steps of 0.5")
]
CoHosts = Annotated[list[uuid.UUID], Field(max_length=20)]


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
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    location: LocationIn
    capacity: Capacity | None = None
    signup_deadline: AwareDatetime | None = None
    visibility: Visibility = Visibility.org
    service_hours: ServiceHours = 0
    post: Post = Post.community


class ActivityUpdate(BaseModel):
    """Fields to change; an absent field keeps its value, `null` clears `capacity` (no limit)
    or `signup_deadline`.  Raising the capacity promotes from the waitlist."""

    model_config = ConfigDict(extra="forbid")

    co_host_org_ids: CoHosts | None = None
    title: Title | None = None
    description: Description | None = None
    category: Category | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    location: LocationIn | None = None
    capacity: Capacity | None = None
    signup_deadline: AwareDatetime | None = None
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
    co_host_org_ids: list[uuid.UUID]
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
    check-ins sent later from a weak network (at most 24 h late)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=CODE_OR_FIX)

    code: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = None
    lat: Latitude | None = None
    lng: Longitude | None = None
    accuracy_m: Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)] | None = None
    scanned_at: AwareDatetime | None = None


class AttendanceMark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: AttendanceStatus


class AttendanceRead(BaseModel):
    activity_id: uuid.UUID
    user_id: uuid.UUID
    status: AttendanceStatus
    method: AttendanceMethod
    attended_at: datetime
    recorded_at: datetime
    credited_hours: float = Field(description="Service hours credited for this activity")
