"""attendance confirmation and daily hours

A check-in sent late waits for the host's officers to confirm it (app/review): attendance
rows get the host organization (the review queue and its scope), how late the upload was,
and the review columns.  Existing rows take their activity's host and `updated_at` =
`recorded_at`.

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-30 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0009"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("activity_attendance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("org_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("delay_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("decided_by", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("decision_comment", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE activity_attendance SET "
        "org_id = (SELECT activities.org_id FROM activities "
        "WHERE activities.id = activity_attendance.activity_id), "
        "updated_at = recorded_at"
    )
    with op.batch_alter_table("activity_attendance", schema=None) as batch_op:
        batch_op.alter_column("org_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.alter_column(
            "updated_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_activity_attendance_org_id_organizations"),
            "organizations",
            ["org_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_activity_attendance_decided_by_users"),
            "users",
            ["decided_by"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(
            "ix_activity_attendance_org_status_recorded",
            ["org_id", "status", "recorded_at", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("activity_attendance", schema=None) as batch_op:
        batch_op.drop_index("ix_activity_attendance_org_status_recorded")
        batch_op.drop_constraint(
            batch_op.f("fk_activity_attendance_decided_by_users"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_activity_attendance_org_id_organizations"), type_="foreignkey"
        )
        batch_op.drop_column("updated_at")
        batch_op.drop_column("decision_comment")
        batch_op.drop_column("decided_by")
        batch_op.drop_column("decided_at")
        batch_op.drop_column("delay_seconds")
        batch_op.drop_column("org_id")
    # Pending check-ins have no meaning before this revision: they were never credited.
    op.execute("DELETE FROM activity_attendance WHERE status = 'pending'")
