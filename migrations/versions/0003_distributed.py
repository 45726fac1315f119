"""Distributed jobs: node and device counts, node claims, the rendezvous endpoint, live workers

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('nodes', sa.Integer(), server_default='1', nullable=False))
    op.add_column('jobs', sa.Column('devices', sa.Integer(), server_default='1', nullable=False))
    op.add_column('jobs', sa.Column('rendezvous', sa.String(length=255), nullable=True))
    op.create_table('job_nodes',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('node_rank', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'node_rank')
    )
    op.create_table('workers',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('queues', sa.JSON(), nullable=False),
    sa.Column('devices', sa.JSON(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workers_heartbeat_at'), ['heartbeat_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workers_heartbeat_at'))
    op.drop_table('workers')
    op.drop_table('job_nodes')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('rendezvous')
        batch_op.drop_column('devices')
        batch_op.drop_column('nodes')
