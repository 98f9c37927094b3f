"""How a contribution record is shown: the fields the member's and the officer's views share."""

from __future__ import annotations

from typing import Any

from app.contributions.records import RecordRow
from app.contributions.review_repository import QueueRow
from app.contributions.schemas import ContributionRead, OrgRef


def hours(half_hours: int | None) -> float:
    return (half_hours or 0) / 2


def record_fields(row: RecordRow | QueueRow) -> dict[str, Any]:
    """What the member's and the officer's views of a record share."""
    return {
        "id": row.id,
        "source": row.source,
        "status": row.status,
        "post": row.post,
        "category": row.category,
        "title": row.title,
        "description": row.description,
        "occurred_on": row.occurred_on,
        "hours": hours(row.half_hours),
        "org": OrgRef(id=row.org_id, name=row.org_name),
        "activity_id": row.activity_id,
        "attachment_count": row.attachment_count,
        "submitted_at": row.submitted_at,
        "decided_at": row.decided_at,
        "decision_comment": row.decision_comment,
    }


def read(row: RecordRow) -> ContributionRead:
    return ContributionRead(**record_fields(row))
