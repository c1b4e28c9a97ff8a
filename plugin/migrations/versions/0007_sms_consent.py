"""sms consent records and Twilio delivery status on invitations

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import plugin.core.db

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sms_consents',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('patient_ref', sa.String(length=200), nullable=False),
    sa.Column('phone_digest', sa.String(length=64), nullable=True),
    sa.Column('granted', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('recorded_via', sa.String(length=16), nullable=False),
    sa.Column('given_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('recorded_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', plugin.core.db.UTCDateTime(), nullable=True),
    sa.Column('revoked_by', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sms_consents_client', 'sms_consents', ['practice_id', 'patient_ref'], unique=False)
    with op.batch_alter_table('invitations') as batch:
        batch.add_column(sa.Column('sms_sid_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('delivered_at', plugin.core.db.UTCDateTime(), nullable=True))
        batch.create_index('ix_invitations_sms_sid_hash', ['sms_sid_hash'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('invitations') as batch:
        batch.drop_index('ix_invitations_sms_sid_hash')
        batch.drop_column('delivered_at')
        batch.drop_column('sms_sid_hash')
    op.drop_index('ix_sms_consents_client', table_name='sms_consents')
    op.drop_table('sms_consents')
