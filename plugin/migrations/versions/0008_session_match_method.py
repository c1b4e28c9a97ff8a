"""how a session's client was found

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
# 0007 is added in parallel on another branch; re-chain to it at merge.
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('session_events') as batch:
        batch.add_column(sa.Column('match_method', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('session_events') as batch:
        batch.drop_column('match_method')
