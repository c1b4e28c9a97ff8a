"""practices.purge_after: an uninstalled practice is kept until its answers reach the EHR

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 16:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

import plugin.core.db

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('practices') as batch:
        batch.add_column(sa.Column('purge_after', plugin.core.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('practices') as batch:
        batch.drop_column('purge_after')
