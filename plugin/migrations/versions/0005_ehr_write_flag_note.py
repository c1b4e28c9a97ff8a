"""ehr write flag note

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ehr_writes') as batch:
        batch.add_column(sa.Column('flag_note', sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ehr_writes') as batch:
        batch.drop_column('flag_note')
