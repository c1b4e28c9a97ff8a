"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 02:07:57.500739
"""

import sqlalchemy as sa
from alembic import op

import plugin.core.db

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('practices',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('ehr_target', sa.String(length=500), nullable=False),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id')
    )
    op.create_table('session_events',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.String(length=256), nullable=False),
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('started_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('ended_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('patient_ref', sa.String(length=200), nullable=False),
    sa.Column('practitioner_ref', sa.String(length=200), nullable=False),
    sa.Column('encounter_ref', sa.String(length=200), nullable=True),
    sa.Column('received_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('practice_id', 'platform', 'event_id'),
    sa.UniqueConstraint('practice_id', 'platform', 'session_id')
    )
    op.create_table('invitations',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('session_event_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('questionnaire', sa.String(length=300), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('contact', sa.LargeBinary(), nullable=True),
    sa.Column('language', sa.String(length=35), nullable=False),
    sa.Column('due_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('next_attempt_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=True),
    sa.Column('sent_at', plugin.core.db.UTCDateTime(), nullable=True),
    sa.Column('expires_at', plugin.core.db.UTCDateTime(), nullable=True),
    sa.Column('answered_at', plugin.core.db.UTCDateTime(), nullable=True),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_event_id'], ['session_events.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_event_id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.create_index('ix_invitations_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('ehr_writes',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('invitation_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('bundle', sa.LargeBinary(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('done_at', plugin.core.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['invitation_id'], ['invitations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('invitation_id')
    )
    with op.batch_alter_table('ehr_writes', schema=None) as batch_op:
        batch_op.create_index('ix_ehr_writes_due', ['status', 'next_attempt_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ehr_writes', schema=None) as batch_op:
        batch_op.drop_index('ix_ehr_writes_due')

    op.drop_table('ehr_writes')
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index('ix_invitations_due')

    op.drop_table('invitations')
    op.drop_table('session_events')
    op.drop_table('practices')
