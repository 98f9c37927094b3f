"""sign-in failures and ID number claims

- sign_in_failures: failed sign-ins per (phone, address), per phone and per address, with the
  lock each has earned and, for a pair, the last successful sign-in from that address
  (app/core/signin_guard.py).  Successful sign-ins are not counted.
- id_number_claims: an ID number a member entered that another account holds; kept apart
  from the account until an officer settles it, so that PATCH /me answers the same whether
  the number was free or not.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sign_in_failures',
    sa.Column('key', sa.String(length=120), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_failure_at', sa.Float(), nullable=True),
    sa.Column('locked_until', sa.Float(), nullable=True),
    sa.Column('last_success_at', sa.Float(), nullable=True),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_sign_in_failures'))
    )
    with op.batch_alter_table('sign_in_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sign_in_failures_expires_at'), ['expires_at'], unique=False)

    op.create_table('id_number_claims',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('holder_id', sa.Uuid(), nullable=True),
    sa.Column('id_number_enc', sa.LargeBinary(), nullable=False),
    sa.Column('id_number_index', sa.String(length=64), nullable=False),
    sa.Column('id_number_masked', sa.String(length=18), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['holder_id'], ['users.id'], name=op.f('fk_id_number_claims_holder_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_id_number_claims_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_id_number_claims'))
    )
    with op.batch_alter_table('id_number_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_id_number_claims_holder_id'), ['holder_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_id_number_claims_id_number_index'), ['id_number_index'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('id_number_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_id_number_claims_id_number_index'))
        batch_op.drop_index(batch_op.f('ix_id_number_claims_holder_id'))

    op.drop_table('id_number_claims')
    with op.batch_alter_table('sign_in_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sign_in_failures_expires_at'))

    op.drop_table('sign_in_failures')
