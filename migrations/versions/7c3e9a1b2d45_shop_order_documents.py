"""shop: order_documents (frozen PDF purchase orders, delivery notes and payment receipts)

Revision ID: 7c3e9a1b2d45
Revises: 5a1d2c3e4f60
Create Date: 2026-12-06 04:10:00

"""
from alembic import op
import sqlalchemy as sa

import core.timeutil  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision = '7c3e9a1b2d45'
down_revision = '5a1d2c3e4f60'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('order_documents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('scope', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=48), nullable=False),
    sa.Column('issued_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.CheckConstraint("kind IN ('purchase_order', 'delivery_note', 'payment_receipt')",
                       name=op.f('ck_order_documents_kind_known')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_documents_order_id_orders'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_documents')),
    sa.UniqueConstraint('order_id', 'kind', 'scope', name='uq_order_documents_order_kind_scope')
    )


def downgrade():
    op.drop_table('order_documents')
