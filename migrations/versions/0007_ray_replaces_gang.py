"""Multi-node jobs run on Ray: the gang's node claims and rendezvous endpoint go

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 21:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table('job_nodes')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('rendezvous')
    _listing_index()


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rendezvous', sa.String(length=255), nullable=True))
    _listing_index()
    op.create_table('job_nodes',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('node_rank', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'node_rank')
    )


def _listing_index() -> None:
    """SQLite's batch copy of `jobs` reflects its indexes without DESC: the listing index (0004)
    is made again in the listing's order, so pages are read off it without a sort."""
    op.drop_index('ix_jobs_project_created', table_name='jobs')
    op.create_index('ix_jobs_project_created', 'jobs', ['project_id', sa.desc('created_at'), 'id'], unique=False)
