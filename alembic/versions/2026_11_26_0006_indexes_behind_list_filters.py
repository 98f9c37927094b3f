"""indexes behind list filters

Every filter a list endpoint offers has an index behind it:
- GET /orgs/{org_id}/audit-log?action=&actor_id=, newest first (keyset on created_at, id):
  (org_id, action|actor_id, created_at, id) for a small subtree read organization by
  organization, (action|actor_id, created_at, id) for a large one read newest first up to the
  page size.  ix_audit_log_actor (actor_id) is replaced by (actor_id, created_at, id), which
  serves everything it did.
- GET /orgs?region_type=: region_type alone ((kind, region_type) serves it only with kind).
- GET /orgs?near=: the query's lat/lng bounding box, (lat, lng).

Plain CREATE INDEX on both engines.  No pg_trgm index for GET /orgs?q= (name contains): the
extension needs a role allowed to create it, which production may not have.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 01:30:00.000000
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        'ix_audit_log_org_action_created', 'audit_log', ['org_id', 'action', 'created_at', 'id']
    )
    op.create_index(
        'ix_audit_log_org_actor_created', 'audit_log', ['org_id', 'actor_id', 'created_at', 'id']
    )
    op.create_index('ix_audit_log_action_created', 'audit_log', ['action', 'created_at', 'id'])
    op.create_index('ix_audit_log_actor_created', 'audit_log', ['actor_id', 'created_at', 'id'])
    op.drop_index('ix_audit_log_actor', table_name='audit_log')
    op.create_index('ix_organizations_region_type', 'organizations', ['region_type'])
    op.create_index('ix_organizations_lat_lng', 'organizations', ['lat', 'lng'])


def downgrade() -> None:
    op.drop_index('ix_organizations_lat_lng', table_name='organizations')
    op.drop_index('ix_organizations_region_type', table_name='organizations')
    op.create_index('ix_audit_log_actor', 'audit_log', ['actor_id'])
    op.drop_index('ix_audit_log_actor_created', table_name='audit_log')
    op.drop_index('ix_audit_log_action_created', table_name='audit_log')
    op.drop_index('ix_audit_log_org_actor_created', table_name='audit_log')
    op.drop_index('ix_audit_log_org_action_created', table_name='audit_log')
