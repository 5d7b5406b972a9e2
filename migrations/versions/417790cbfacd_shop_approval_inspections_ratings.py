"""shop: internal approval, inspections, refund requests, ratings

Revision ID: 417790cbfacd
Revises: 7c3e9a1b2d45
Create Date: 2026-12-06 12:16:19.312337

"""
from alembic import op
import sqlalchemy as sa

import core.timeutil  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision = '417790cbfacd'
down_revision = '7c3e9a1b2d45'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('cooperative_ratings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('cooperative_id', sa.Integer(), nullable=False),
    sa.Column('rater_id', sa.Integer(), nullable=False),
    sa.Column('quality', sa.SmallInteger(), nullable=False),
    sa.Column('delivery', sa.SmallInteger(), nullable=False),
    sa.Column('service', sa.SmallInteger(), nullable=False),
    sa.Column('comment', sa.String(length=500), nullable=False),
    sa.Column('created_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.CheckConstraint('delivery BETWEEN 1 AND 5', name=op.f('ck_cooperative_ratings_delivery_in_range')),
    sa.CheckConstraint('quality BETWEEN 1 AND 5', name=op.f('ck_cooperative_ratings_quality_in_range')),
    sa.CheckConstraint('service BETWEEN 1 AND 5', name=op.f('ck_cooperative_ratings_service_in_range')),
    sa.ForeignKeyConstraint(['cooperative_id'], ['cooperatives.id'], name=op.f('fk_cooperative_ratings_cooperative_id_cooperatives')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_cooperative_ratings_order_id_orders'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rater_id'], ['users.id'], name=op.f('fk_cooperative_ratings_rater_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cooperative_ratings')),
    sa.UniqueConstraint('order_id', 'cooperative_id', name='uq_cooperative_ratings_order_cooperative')
    )
    with op.batch_alter_table('cooperative_ratings', schema=None) as batch_op:
        batch_op.create_index('ix_cooperative_ratings_cooperative_id', ['cooperative_id'], unique=False)

    op.create_table('order_inspections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('inspector_id', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('photo', sa.String(length=80), nullable=True),
    sa.Column('claim_fen', sa.BigInteger(), nullable=False),
    sa.Column('created_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['inspector_id'], ['users.id'], name=op.f('fk_order_inspections_inspector_id_users')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_inspections_order_id_orders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_inspections')),
    sa.UniqueConstraint('order_id', name=op.f('uq_order_inspections_order_id'))
    )
    op.create_table('product_reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('reviewer_id', sa.Integer(), nullable=False),
    sa.Column('rating', sa.SmallInteger(), nullable=False),
    sa.Column('comment', sa.String(length=500), nullable=False),
    sa.Column('created_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.CheckConstraint('rating BETWEEN 1 AND 5', name=op.f('ck_product_reviews_rating_in_range')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_product_reviews_order_id_orders'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_product_reviews_product_id_products'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reviewer_id'], ['users.id'], name=op.f('fk_product_reviews_reviewer_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_product_reviews')),
    sa.UniqueConstraint('order_id', 'product_id', name='uq_product_reviews_order_product')
    )
    with op.batch_alter_table('product_reviews', schema=None) as batch_op:
        batch_op.create_index('ix_product_reviews_product_id', ['product_id'], unique=False)

    op.create_table('inspection_lines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('inspection_id', sa.Integer(), nullable=False),
    sa.Column('line_id', sa.Integer(), nullable=False),
    sa.Column('received_quantity', sa.Integer(), nullable=False),
    sa.Column('rejected_quantity', sa.Integer(), nullable=False),
    sa.Column('shortfall', sa.Integer(), nullable=False),
    sa.Column('claim_fen', sa.BigInteger(), nullable=False),
    sa.Column('note', sa.String(length=300), nullable=False),
    sa.CheckConstraint('claim_fen >= 0', name=op.f('ck_inspection_lines_claim_not_negative')),
    sa.CheckConstraint('received_quantity >= 0', name=op.f('ck_inspection_lines_received_not_negative')),
    sa.CheckConstraint('rejected_quantity >= 0 AND rejected_quantity <= received_quantity', name=op.f('ck_inspection_lines_rejected_within_received')),
    sa.ForeignKeyConstraint(['inspection_id'], ['order_inspections.id'], name=op.f('fk_inspection_lines_inspection_id_order_inspections'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['line_id'], ['order_lines.id'], name=op.f('fk_inspection_lines_line_id_order_lines'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inspection_lines')),
    sa.UniqueConstraint('inspection_id', 'line_id', name='uq_inspection_lines_inspection_line')
    )
    op.create_table('refund_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('inspection_id', sa.Integer(), nullable=True),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=False),
    sa.Column('created_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', core.timeutil.UTCDateTime(), nullable=True),
    sa.Column('decision_comment', sa.String(length=500), nullable=True),
    sa.Column('refund_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("status IN ('open', 'refunded', 'declined')", name=op.f('ck_refund_requests_status_known')),
    sa.CheckConstraint('amount_fen > 0', name=op.f('ck_refund_requests_amount_positive')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_refund_requests_decided_by_id_users')),
    sa.ForeignKeyConstraint(['inspection_id'], ['order_inspections.id'], name=op.f('fk_refund_requests_inspection_id_order_inspections'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_refund_requests_order_id_orders'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['refund_id'], ['refunds.id'], name=op.f('fk_refund_requests_refund_id_refunds'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['requested_by_id'], ['users.id'], name=op.f('fk_refund_requests_requested_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refund_requests')),
    sa.UniqueConstraint('inspection_id', name=op.f('uq_refund_requests_inspection_id'))
    )
    with op.batch_alter_table('refund_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refund_requests_order_id'), ['order_id'], unique=False)
        batch_op.create_index('ix_refund_requests_status', ['status'], unique=False)

    with op.batch_alter_table('budget_units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approval_threshold_fen', sa.BigInteger(), nullable=True))
        batch_op.create_check_constraint(op.f('ck_budget_units_approval_threshold_not_negative'),
                                         'approval_threshold_fen IS NULL OR approval_threshold_fen >= 0')

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approval_status', sa.String(length=12), nullable=True))
        batch_op.add_column(sa.Column('approval_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('approval_at', core.timeutil.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('approval_comment', sa.String(length=500), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_orders_approval_by_id_users'), 'users', ['approval_by_id'], ['id'])
        batch_op.create_check_constraint(
            op.f('ck_orders_approval_status_known'),
            "approval_status IS NULL OR approval_status IN ('pending', 'approved', 'rejected')")

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_approver', sa.Boolean(), server_default=sa.false(), nullable=False))



def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('is_approver')

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_orders_approval_status_known'), type_='check')
        batch_op.drop_constraint(batch_op.f('fk_orders_approval_by_id_users'), type_='foreignkey')
        batch_op.drop_column('approval_comment')
        batch_op.drop_column('approval_at')
        batch_op.drop_column('approval_by_id')
        batch_op.drop_column('approval_status')

    with op.batch_alter_table('budget_units', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_budget_units_approval_threshold_not_negative'), type_='check')
        batch_op.drop_column('approval_threshold_fen')

    with op.batch_alter_table('refund_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_refund_requests_status')
        batch_op.drop_index(batch_op.f('ix_refund_requests_order_id'))

    op.drop_table('refund_requests')
    op.drop_table('inspection_lines')
    with op.batch_alter_table('product_reviews', schema=None) as batch_op:
        batch_op.drop_index('ix_product_reviews_product_id')

    op.drop_table('product_reviews')
    op.drop_table('order_inspections')
    with op.batch_alter_table('cooperative_ratings', schema=None) as batch_op:
        batch_op.drop_index('ix_cooperative_ratings_cooperative_id')

    op.drop_table('cooperative_ratings')
