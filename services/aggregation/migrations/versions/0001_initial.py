"""aggregation: data values, completeness, outbox, inbox, metadata replica

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

from shared.migrations import create_delivery_tables_v1, create_replica_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    create_delivery_tables_v1(op, S)
    create_replica_tables_v1(op, S)
    op.create_table(
        "data_value",
        sa.Column("data_element", sa.Text, primary_key=True),
        sa.Column("combo", sa.Text, primary_key=True),
        sa.Column("org_unit", sa.Text, primary_key=True),
        sa.Column("period", sa.Text, primary_key=True),
        sa.Column("period_type", sa.Text, nullable=False),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("path", sa.Text(collation="C"), nullable=False),
        sa.Column("value", sa.Numeric),
        sa.Column("text_value", sa.Text),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("return_id", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S)
    # subtree x time range per element; INCLUDE makes the totals index-only scans
    op.execute(f"CREATE INDEX data_value_subtree ON {S}.data_value (data_element, path, start_date) "
               "INCLUDE (combo, org_unit, end_date, value)")
    # re-pathing after a move touches one unit's values
    op.create_index("data_value_unit", "data_value", ["org_unit", "start_date"], schema=S)
    op.create_table(
        "completeness",
        sa.Column("data_set", sa.Text, primary_key=True),
        sa.Column("org_unit", sa.Text, primary_key=True),
        sa.Column("period", sa.Text, primary_key=True),
        sa.Column("return_id", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("on_time", sa.Boolean, nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        schema=S)


def downgrade():
    op.execute(f"DROP SCHEMA {S} CASCADE")
