"""auth: revoked sessions and tokens (sign-out that really signs out)

Revision ID: bd92dcba448a
Revises: e8c594b86e1c
Create Date: 2026-12-05 16:00:00

"""
from alembic import op
import sqlalchemy as sa

import core.timeutil  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision = 'bd92dcba448a'
down_revision = 'e8c594b86e1c'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('revoked_sessions',
    sa.Column('sid', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('revoked_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.Column('expires_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_revoked_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sid', name=op.f('pk_revoked_sessions'))
    )
    with op.batch_alter_table('revoked_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revoked_sessions_expires_at'), ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('revoked_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revoked_sessions_expires_at'))
    op.drop_table('revoked_sessions')
