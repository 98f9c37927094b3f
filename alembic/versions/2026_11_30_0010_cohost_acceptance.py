"""co-host acceptance and row versions

- activity_co_hosts: a co-host named outside the naming officer's subtree is an invitation
  (`status` pending → accepted | declined) with who invited and who decided, and when.  Rows
  written before this revision were shown to their members already: they become `accepted`.
  (org_id, status, created_at, activity_id) serves an organization's invitation list.
- checkins, contributions, users: `version`, one more with every UPDATE of the row.  A
  reviewed record's ETag is made of it (a check-in's also of its member's profile), and a
  decision's `If-Match` is a condition of the decision's UPDATE.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 00:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VERSIONED = ('checkins', 'contributions', 'users')


def upgrade() -> None:
    with op.batch_alter_table('activity_co_hosts', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('status', sa.String(length=10), server_default='accepted', nullable=False)
        )
        batch_op.add_column(sa.Column('invited_by', sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column(
                'created_at',
                sa.DateTime(timezone=True),
                server_default=sa.text('CURRENT_TIMESTAMP'),
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column('decided_by', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_activity_co_hosts_invited_by_users'),
            'users',
            ['invited_by'],
            ['id'],
            ondelete='SET NULL',
        )
        batch_op.create_foreign_key(
            batch_op.f('fk_activity_co_hosts_decided_by_users'),
            'users',
            ['decided_by'],
            ['id'],
            ondelete='SET NULL',
        )
        batch_op.create_index(
            'ix_activity_co_hosts_org_status_created',
            ['org_id', 'status', 'created_at', 'activity_id'],
            unique=False,
        )
    for table in _VERSIONED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False)
            )


def downgrade() -> None:
    for table in reversed(_VERSIONED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('version')
    with op.batch_alter_table('activity_co_hosts', schema=None) as batch_op:
        batch_op.drop_index('ix_activity_co_hosts_org_status_created')
        batch_op.drop_constraint(
            batch_op.f('fk_activity_co_hosts_decided_by_users'), type_='foreignkey'
        )
        batch_op.drop_constraint(
            batch_op.f('fk_activity_co_hosts_invited_by_users'), type_='foreignkey'
        )
        batch_op.drop_column('decided_at')
        batch_op.drop_column('decided_by')
        batch_op.drop_column('created_at')
        batch_op.drop_column('invited_by')
        batch_op.drop_column('status')
