"""jobs.recipe: the resolved training recipe of a pretrain job

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 17:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('recipe', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'recipe')
