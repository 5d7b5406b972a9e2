"""traceability: fake_reports (consumers' reports of suspected counterfeits)

Revision ID: 8e2f4a6b1c37
Revises: 417790cbfacd
Create Date: 2026-12-06 12:45:00

"""
from alembic import op
import sqlalchemy as sa

import core.timeutil  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision = '8e2f4a6b1c37'
down_revision = '417790cbfacd'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('fake_reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=600), nullable=False),
    sa.Column('authentic', sa.Boolean(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.Column('serial', sa.String(length=20), nullable=True),
    sa.Column('reason', sa.String(length=20), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=False),
    sa.Column('contact', sa.String(length=60), nullable=True),
    sa.Column('created_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.CheckConstraint("reason IN ('label_mismatch', 'scanned_often', 'price_too_low', 'seller_unknown', 'other')",
                       name=op.f('ck_fake_reports_reason_known')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_fake_reports_batch_id_batches'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fake_reports'))
    )
    with op.batch_alter_table('fake_reports', schema=None) as batch_op:
        batch_op.create_index('ix_fake_reports_batch_serial', ['batch_id', 'serial'], unique=False)


def downgrade():
    with op.batch_alter_table('fake_reports', schema=None) as batch_op:
        batch_op.drop_index('ix_fake_reports_batch_serial')
    op.drop_table('fake_reports')
