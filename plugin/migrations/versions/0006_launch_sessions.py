"""launch client id and launch sessions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import plugin.core.db

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ehr_connections') as batch:
        batch.add_column(sa.Column('launch_client_id', sa.String(length=200), nullable=True))
    op.create_table('launch_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_launch_sessions_expiry', 'launch_sessions', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_launch_sessions_expiry', table_name='launch_sessions')
    op.drop_table('launch_sessions')
    with op.batch_alter_table('ehr_connections') as batch:
        batch.drop_column('launch_client_id')
