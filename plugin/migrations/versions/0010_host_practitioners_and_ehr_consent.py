"""host -> Practitioner mappings, and the EHR Consent an SMS consent came from

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import plugin.core.db

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_practitioners',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('host_digest', sa.String(length=64), nullable=False),
    sa.Column('host_email', sa.LargeBinary(), nullable=False),
    sa.Column('practitioner_ref', sa.String(length=200), nullable=False),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('practice_id', 'host_digest')
    )
    with op.batch_alter_table('sms_consents') as batch:
        batch.add_column(sa.Column('ehr_ref', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sms_consents') as batch:
        batch.drop_column('ehr_ref')
    op.drop_table('host_practitioners')
