"""The shapes of statistics and exports that cross HTTP."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models.activity import Post


class MonthHours(BaseModel):
    month: str = Field(examples=["2026-03"])
    post: Post
    hours: float
    count: int


class StatsRead(BaseModel):
    org_id: uuid.UUID
    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    members: int = Field(description="Distinct members approved in the subtree")
    floating_members: int = Field(description="Of them, floating (流动党员)")
    pending_checkins: int
    pending_contributions: int
    activities: int = Field(description="Published or completed activities starting in the range")
    signups: int = Field(description="Confirmed sign-ups of those activities")
    attendances: int = Field(description="Present attendance records of those activities")
    attendance_rate: float | None = Field(
        description="attendances / signups of those activities; null when no sign-ups"
    )
    contribution_hours: list[MonthHours] = Field(
        description="Approved hours per month and post (activity credits included)"
    )

    model_config = ConfigDict(populate_by_name=True)


ExportKind = Literal["members", "contributions", "attendance"]
ExportFormat = Literal["xlsx", "csv"]
