"""aggregation: the subtree index keys the period type before the path

A total asked at a period's own type (a year of yearly data) names the period
type exactly; with the type only INCLUDEd, a country-by-year question scanned
every monthly and quarterly value that starts on 1 January too and dropped
them one by one (17,000 index entries, a third of the query's time at national
scale). Keyed, the type is part of the range: equality on (element, start,
type), then the path range.

Revision ID: 0005
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    op.execute(f"DROP INDEX {S}.data_value_subtree")
    op.execute(f"CREATE INDEX data_value_subtree ON {S}.data_value (data_element, start_date, period_type, path) "
               "INCLUDE (combo, org_unit, value)")


def downgrade():
    op.execute(f"DROP INDEX {S}.data_value_subtree")
    op.execute(f"CREATE INDEX data_value_subtree ON {S}.data_value (data_element, start_date, path) "
               "INCLUDE (combo, org_unit, period_type, value)")
