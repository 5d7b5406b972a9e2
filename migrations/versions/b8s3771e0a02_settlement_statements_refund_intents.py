"""shop: settlement statements (结算单) and their frozen lines; refund intents and the amount they
reserve on the order

Revision ID: b8s3771e0a02
Revises: c9a0d17a5e03
Create Date: 2026-12-07 07:00:00

"""
from alembic import op
import sqlalchemy as sa

import core.timeutil  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision = 'b8s3771e0a02'
down_revision = 'c9a0d17a5e03'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('settlement_statements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cooperative_id', sa.Integer(), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('cutoff_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('gross_fen', sa.BigInteger(), nullable=False),
    sa.Column('refunds_fen', sa.BigInteger(), nullable=False),
    sa.Column('net_fen', sa.BigInteger(), nullable=False),
    sa.Column('line_count', sa.Integer(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('issued_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.Column('issued_by_id', sa.Integer(), nullable=True),
    sa.Column('paid_at', core.timeutil.UTCDateTime(), nullable=True),
    sa.Column('paid_on', sa.Date(), nullable=True),
    sa.Column('paid_by_id', sa.Integer(), nullable=True),
    sa.Column('bank_reference', sa.String(length=120), nullable=True),
    sa.CheckConstraint("status IN ('issued', 'paid')", name=op.f('ck_settlement_statements_status_known')),
    sa.CheckConstraint('gross_fen >= 0 AND refunds_fen >= 0 AND net_fen = gross_fen - refunds_fen',
                       name=op.f('ck_settlement_statements_net_is_gross_minus_refunds')),
    sa.CheckConstraint("status <> 'paid' OR (paid_at IS NOT NULL AND bank_reference IS NOT NULL)",
                       name=op.f('ck_settlement_statements_paid_has_reference')),
    sa.ForeignKeyConstraint(['cooperative_id'], ['cooperatives.id'],
                            name=op.f('fk_settlement_statements_cooperative_id_cooperatives')),
    sa.ForeignKeyConstraint(['issued_by_id'], ['users.id'], name=op.f('fk_settlement_statements_issued_by_id_users')),
    sa.ForeignKeyConstraint(['paid_by_id'], ['users.id'], name=op.f('fk_settlement_statements_paid_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_statements')),
    sa.UniqueConstraint('cooperative_id', 'period', name='uq_settlement_statements_cooperative_period')
    )
    with op.batch_alter_table('settlement_statements', schema=None) as batch_op:
        batch_op.create_index('ix_settlement_statements_period', ['period'], unique=False)

    op.create_table('settlement_lines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('statement_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('allocation_id', sa.Integer(), nullable=True),
    sa.Column('refund_part_id', sa.Integer(), nullable=True),
    sa.Column('source_allocation_id', sa.Integer(), nullable=False),
    sa.Column('order_number', sa.String(length=32), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('product_name', sa.String(length=120), nullable=False),
    sa.Column('village_id', sa.Integer(), nullable=False),
    sa.Column('village_name', sa.String(length=120), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=True),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('occurred_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('sale', 'refund')", name=op.f('ck_settlement_lines_kind_known')),
    sa.CheckConstraint("(kind = 'sale' AND allocation_id IS NOT NULL AND refund_part_id IS NULL "
                       "AND amount_fen >= 0) OR (kind = 'refund' AND refund_part_id IS NOT NULL "
                       "AND allocation_id IS NULL AND amount_fen < 0)",
                       name=op.f('ck_settlement_lines_movement_matches_kind')),
    sa.ForeignKeyConstraint(['statement_id'], ['settlement_statements.id'],
                            name=op.f('fk_settlement_lines_statement_id_settlement_statements'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['allocation_id'], ['order_allocations.id'],
                            name=op.f('fk_settlement_lines_allocation_id_order_allocations')),
    sa.ForeignKeyConstraint(['refund_part_id'], ['refund_allocations.id'],
                            name=op.f('fk_settlement_lines_refund_part_id_refund_allocations')),
    sa.ForeignKeyConstraint(['source_allocation_id'], ['order_allocations.id'],
                            name=op.f('fk_settlement_lines_source_allocation_id_order_allocations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_lines')),
    sa.UniqueConstraint('allocation_id', name='uq_settlement_lines_allocation_id'),
    sa.UniqueConstraint('refund_part_id', name='uq_settlement_lines_refund_part_id')
    )
    with op.batch_alter_table('settlement_lines', schema=None) as batch_op:
        batch_op.create_index('ix_settlement_lines_statement_id', ['statement_id'], unique=False)

    op.create_table('refund_intents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('line_amounts', sa.Text(), nullable=True),
    sa.Column('refund_request_id', sa.Integer(), nullable=True),
    sa.Column('refund_id', sa.Integer(), nullable=True),
    sa.Column('provider_refund_id', sa.String(length=255), nullable=True),
    sa.Column('failure', sa.String(length=500), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', core.timeutil.UTCDateTime(), nullable=False),
    sa.Column('finished_at', core.timeutil.UTCDateTime(), nullable=True),
    sa.CheckConstraint('amount_fen > 0', name=op.f('ck_refund_intents_amount_positive')),
    sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f('ck_refund_intents_status_known')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_refund_intents_order_id_orders'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_refund_intents_actor_id_users')),
    sa.ForeignKeyConstraint(['refund_request_id'], ['refund_requests.id'],
                            name=op.f('fk_refund_intents_refund_request_id_refund_requests'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['refund_id'], ['refunds.id'], name=op.f('fk_refund_intents_refund_id_refunds'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refund_intents')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_refund_intents_idempotency_key'))
    )
    with op.batch_alter_table('refund_intents', schema=None) as batch_op:
        batch_op.create_index('ix_refund_intents_status_created_at', ['status', 'created_at'], unique=False)
        batch_op.create_index('ix_refund_intents_order_id', ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_refund_intents_refund_request_id'), ['refund_request_id'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refund_reserved_fen', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_check_constraint(
            op.f('ck_orders_refund_reserved_in_range'),
            'refund_reserved_fen >= 0 AND refunded_fen + refund_reserved_fen <= total_fen')


def downgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_orders_refund_reserved_in_range'), type_='check')
        batch_op.drop_column('refund_reserved_fen')
    with op.batch_alter_table('refund_intents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refund_intents_refund_request_id'))
        batch_op.drop_index('ix_refund_intents_order_id')
        batch_op.drop_index('ix_refund_intents_status_created_at')
    op.drop_table('refund_intents')
    with op.batch_alter_table('settlement_lines', schema=None) as batch_op:
        batch_op.drop_index('ix_settlement_lines_statement_id')
    op.drop_table('settlement_lines')
    with op.batch_alter_table('settlement_statements', schema=None) as batch_op:
        batch_op.drop_index('ix_settlement_statements_period')
    op.drop_table('settlement_statements')
