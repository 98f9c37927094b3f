"""Check-in rows shaped into the answers of the API (personal data masked on the way)."""

from __future__ import annotations

from typing import Any

from app.checkins.repository import AuditRow, CheckinRow, MemberRow, QueueRow
from app.checkins.schemas import (
    AuditEntryRead,
    CheckinQueueItem,
    CheckinRead,
    MemberCard,
    MemberRead,
    OrgSummary,
    RecordOrg,
)
from app.core.crypto import mask_phone
from app.review.preconditions import format_etag


def _org(row: CheckinRow | QueueRow | MemberRow | AuditRow) -> OrgSummary:
    return OrgSummary(id=row.org_id, name=row.org_name, kind=row.org_kind)


def _checkin_fields(row: CheckinRow | QueueRow) -> dict[str, Any]:
    """What the member's and the officer's views of a check-in share."""
    return {
        "id": row.id,
        "org": _org(row),
        "status": row.status,
        "note": row.note,
        "floating": row.floating,
        "submitted_at": row.created_at,
        "decided_at": row.decided_at,
        "decision_comment": row.decision_comment,
        "ended_at": row.ended_at,
    }


def mine(row: CheckinRow) -> CheckinRead:
    return CheckinRead(**_checkin_fields(row))


def queue_item(row: QueueRow) -> CheckinQueueItem:
    return CheckinQueueItem(
        **_checkin_fields(row),
        member=MemberCard(
            id=row.user_id,
            name=row.user_name,
            phone_masked=mask_phone(row.user_phone),
            party_status=row.user_party_status,
            employer=row.user_employer,
            record_org=RecordOrg(id=row.record_org_id, name=row.record_org_name),
        ),
        decided_by=row.decided_by,
        etag=format_etag([row.version, row.user_version]),
    )


def member(row: MemberRow) -> MemberRead:
    return MemberRead(
        checkin_id=row.id,
        user_id=row.user_id,
        name=row.user_name,
        phone_masked=mask_phone(row.user_phone),
        id_number_masked=row.user_id_number_masked,
        gender=row.user_gender,
        party_status=row.user_party_status,
        employer=row.user_employer,
        post_title=row.user_post_title,
        record_org=RecordOrg(id=row.record_org_id, name=row.record_org_name),
        floating=row.floating,
        org=_org(row),
        registered_at=row.decided_at,
    )


def audit_entry(row: AuditRow) -> AuditEntryRead:
    return AuditEntryRead(
        id=row.id,
        created_at=row.created_at,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        org=_org(row),
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        actor_client_id=row.actor_client_id,
        from_state=row.from_state,
        to_state=row.to_state,
        comment=row.comment,
    )
