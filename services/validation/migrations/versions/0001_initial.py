"""validation: results, outbox, inbox, metadata replica

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.migrations import create_delivery_tables_v1, create_replica_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "validation"


def upgrade():
    create_delivery_tables_v1(op, S)
    create_replica_tables_v1(op, S)
    op.create_table(
        "result",
        sa.Column("return_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("data_set", sa.Text, nullable=False),
        sa.Column("org_unit", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("violations", JSONB, nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S)
    op.create_index("result_place", "result", ["org_unit", "period", "data_set"], schema=S)


def downgrade():
    op.execute(f"DROP SCHEMA {S} CASCADE")
