"""aggregation: per-unit yearly totals; value index ordered for exact-period lookups

Revision ID: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    # a query names exact periods (start_date equality) and a subtree (path range)
    op.execute(f"DROP INDEX {S}.data_value_subtree")
    op.execute(f"CREATE INDEX data_value_subtree ON {S}.data_value (data_element, start_date, path) "
               "INCLUDE (combo, org_unit, period_type, value)")
    op.create_table(
        "year_total",
        sa.Column("data_element", sa.Text, primary_key=True),
        sa.Column("combo", sa.Text, primary_key=True),         # '*': the element's total over combos
        sa.Column("org_unit", sa.Text, primary_key=True),
        sa.Column("year", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text(collation="C"), primary_key=True),
        sa.Column("s", sa.Numeric, nullable=False),            # sum of the unit's period values
        sa.Column("n", sa.Integer, nullable=False),            # periods with a value
        sa.Column("last_start", sa.Date, nullable=False),      # latest period with a value
        sa.Column("last_value", sa.Numeric, nullable=False),   # its value
        schema=S)
    op.execute(f"CREATE INDEX year_total_subtree ON {S}.year_total (data_element, year, combo, path) "
               "INCLUDE (org_unit, s, n, last_start, last_value)")
    op.create_index("year_total_unit", "year_total", ["org_unit", "year"], schema=S)


def downgrade():
    op.drop_table("year_total", schema=S)
