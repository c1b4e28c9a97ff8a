"""ehr connections and signing keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:42:26.624950
"""

import sqlalchemy as sa
from alembic import op

import plugin.core.db

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signing_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('alg', sa.String(length=8), nullable=False),
    sa.Column('private_key', sa.LargeBinary(), nullable=False),
    sa.Column('public_jwk', sa.JSON(), nullable=False),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('retired_at', plugin.core.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('kid')
    )
    op.create_table('ehr_connections',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('fhir_base', sa.String(length=500), nullable=False),
    sa.Column('client_id', sa.String(length=200), nullable=False),
    sa.Column('token_endpoint', sa.String(length=500), nullable=False),
    sa.Column('facts', sa.JSON(), nullable=False),
    sa.Column('scope', sa.String(length=500), nullable=False),
    sa.Column('checked_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('practice_id')
    )
    with op.batch_alter_table('ehr_writes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('path', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('outcome', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('retry_until', plugin.core.db.UTCDateTime(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('ehr_writes', schema=None) as batch_op:
        batch_op.drop_column('retry_until')
        batch_op.drop_column('outcome')
        batch_op.drop_column('path')

    op.drop_table('ehr_connections')
    op.drop_table('signing_keys')
