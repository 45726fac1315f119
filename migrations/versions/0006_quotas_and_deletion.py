"""Quotas: indexes for a project's jobs by state and kind (active jobs, embed-index files) and for
its checkpoints' bytes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 21:00:00
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_project_state_kind', ['project_id', 'state', 'kind'], unique=False)
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.create_index('ix_checkpoints_project_bytes', ['project_id', 'bytes'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_index('ix_checkpoints_project_bytes')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_project_state_kind')
