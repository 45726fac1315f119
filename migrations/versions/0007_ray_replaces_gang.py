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


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rendezvous', sa.String(length=255), nullable=True))
    op.create_table('job_nodes',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('node_rank', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'node_rank')
    )
