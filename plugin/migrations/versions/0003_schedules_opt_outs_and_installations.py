"""schedules, opt-outs and installations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 04:41:47.831041
"""

import sqlalchemy as sa
from alembic import op

import plugin.core.db

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_UNIQUE = {'uq': '%(table_name)s_%(column_0_name)s_key'}


def upgrade() -> None:
    op.create_table('install_events',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('opt_outs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('patient_ref', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', plugin.core.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('opt_outs', schema=None) as batch_op:
        batch_op.create_index('ix_opt_outs_client', ['practice_id', 'patient_ref'], unique=False)

    op.create_table('schedule_policies',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('practice_id', sa.String(length=36), nullable=False),
    sa.Column('practitioner_ref', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('created_at', plugin.core.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['practice_id'], ['practices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('practice_id', 'practitioner_ref', 'version')
    )
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('patient_ref', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('policy_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('policy_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('token', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('phone_digest', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('channels', sa.JSON(), nullable=False, server_default='["email"]'))
        batch_op.add_column(sa.Column('channel_index', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('reminder_due_at', plugin.core.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('reminded_at', plugin.core.db.UTCDateTime(), nullable=True))
        batch_op.create_index('ix_invitations_client', ['practice_id', 'patient_ref', 'due_at'], unique=False)
        batch_op.create_index('ix_invitations_phone', ['phone_digest'], unique=False)
        batch_op.create_index('ix_invitations_reminder', ['status', 'reminder_due_at'], unique=False)

    # 0001 left the account_id constraint unnamed; PostgreSQL calls it practices_account_id_key,
    # and the naming convention gives SQLite's reflected copy the same name.
    with op.batch_alter_table('practices', schema=None, naming_convention=_UNIQUE) as batch_op:
        batch_op.add_column(sa.Column('platform', sa.String(length=32), nullable=False, server_default='standard'))
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='active'))
        batch_op.add_column(sa.Column('platform_token', sa.LargeBinary(), nullable=True))
        batch_op.drop_constraint('practices_account_id_key', type_='unique')
        batch_op.create_unique_constraint('practices_platform_account_id_key', ['platform', 'account_id'])

    with op.batch_alter_table('session_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contact', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('language', sa.String(length=35), nullable=True))
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))
        # Events from before 0003 already have their invitation: they count as planned.
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='planned'))
        batch_op.add_column(sa.Column('reason', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('session_number', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('next_attempt_at', plugin.core.db.UTCDateTime(), nullable=False, server_default='1970-01-01 00:00:00.000000'))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('last_error', sa.String(length=200), nullable=True))
        batch_op.alter_column('patient_ref',
               existing_type=sa.VARCHAR(length=200),
               nullable=True)
        batch_op.alter_column('practitioner_ref',
               existing_type=sa.VARCHAR(length=200),
               nullable=True)
        batch_op.create_index('ix_session_events_client', ['practice_id', 'patient_ref', 'ended_at'], unique=False)
        batch_op.create_index('ix_session_events_due', ['status', 'next_attempt_at'], unique=False)




def downgrade() -> None:
    with op.batch_alter_table('session_events', schema=None) as batch_op:
        batch_op.drop_index('ix_session_events_due')
        batch_op.drop_index('ix_session_events_client')
        batch_op.alter_column('practitioner_ref',
               existing_type=sa.VARCHAR(length=200),
               nullable=False)
        batch_op.alter_column('patient_ref',
               existing_type=sa.VARCHAR(length=200),
               nullable=False)
        batch_op.drop_column('last_error')
        batch_op.drop_column('attempts')
        batch_op.drop_column('next_attempt_at')
        batch_op.drop_column('session_number')
        batch_op.drop_column('reason')
        batch_op.drop_column('status')
        batch_op.drop_column('timezone')
        batch_op.drop_column('language')
        batch_op.drop_column('contact')

    with op.batch_alter_table('practices', schema=None) as batch_op:
        batch_op.drop_constraint('practices_platform_account_id_key', type_='unique')
        batch_op.create_unique_constraint('practices_account_id_key', ['account_id'])
        batch_op.drop_column('platform_token')
        batch_op.drop_column('status')
        batch_op.drop_column('platform')

    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index('ix_invitations_reminder')
        batch_op.drop_index('ix_invitations_phone')
        batch_op.drop_index('ix_invitations_client')
        batch_op.drop_column('reminded_at')
        batch_op.drop_column('reminder_due_at')
        batch_op.drop_column('channel_index')
        batch_op.drop_column('channels')
        batch_op.drop_column('timezone')
        batch_op.drop_column('phone_digest')
        batch_op.drop_column('token')
        batch_op.drop_column('policy_version')
        batch_op.drop_column('policy_id')
        batch_op.drop_column('patient_ref')

    op.drop_table('schedule_policies')
    with op.batch_alter_table('opt_outs', schema=None) as batch_op:
        batch_op.drop_index('ix_opt_outs_client')

    op.drop_table('opt_outs')
    op.drop_table('install_events')

