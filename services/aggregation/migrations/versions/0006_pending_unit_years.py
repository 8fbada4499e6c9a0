"""aggregation: pending yearly totals queued per unit-year, with the elements touched

A history chunk queued one (unit, year, element) key per value group: 20,000 keys a
40,000-value chunk, ~150 ms of its ~1.3 s (statement log of the national benchmark),
and every later month of the year probed the same keys again. One row per unit-year
and set of elements a chunk touched is 400 rows a chunk, and the same set comes back
from the next month as one conflict, not fifty.

Revision ID: 0006
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    op.execute(f"CREATE TABLE {S}.year_total_pending_new (org_unit text NOT NULL, year int NOT NULL, "
               "data_elements text[] NOT NULL, PRIMARY KEY (org_unit, year, data_elements))")
    op.execute(f"INSERT INTO {S}.year_total_pending_new SELECT org_unit, year, array_agg(data_element "
               f"ORDER BY data_element) FROM {S}.year_total_pending GROUP BY org_unit, year")
    op.execute(f"DROP TABLE {S}.year_total_pending")
    op.execute(f"ALTER TABLE {S}.year_total_pending_new RENAME TO year_total_pending")
    op.execute(f"ALTER INDEX {S}.year_total_pending_new_pkey RENAME TO year_total_pending_pkey")


def downgrade():
    op.execute(f"CREATE TABLE {S}.year_total_pending_old (org_unit text NOT NULL, year int NOT NULL, "
               "data_element text NOT NULL, PRIMARY KEY (org_unit, year, data_element))")
    op.execute(f"INSERT INTO {S}.year_total_pending_old SELECT DISTINCT org_unit, year, unnest(data_elements) "
               f"FROM {S}.year_total_pending")
    op.execute(f"DROP TABLE {S}.year_total_pending")
    op.execute(f"ALTER TABLE {S}.year_total_pending_old RENAME TO year_total_pending")
    op.execute(f"ALTER INDEX {S}.year_total_pending_old_pkey RENAME TO year_total_pending_pkey")
