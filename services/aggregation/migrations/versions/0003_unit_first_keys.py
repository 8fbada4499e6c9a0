"""aggregation: keys that lead with the org unit; yearly totals pending a rebuild

A return or a history chunk rebuilds yearly totals per (unit, year): with the
unit first in the primary keys, those reads use the keys themselves, and every
write maintains one index fewer. History chunks leave the yearly rebuild to a
background worker through ``year_total_pending``.

Revision ID: 0003
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    op.execute(f"ALTER TABLE {S}.data_value DROP CONSTRAINT data_value_pkey")
    op.execute(f"ALTER TABLE {S}.data_value ADD CONSTRAINT data_value_pkey "
               "PRIMARY KEY (org_unit, data_element, combo, period)")
    op.execute(f"DROP INDEX {S}.data_value_unit")
    op.execute(f"ALTER TABLE {S}.year_total DROP CONSTRAINT year_total_pkey")
    op.execute(f"ALTER TABLE {S}.year_total ADD CONSTRAINT year_total_pkey "
               "PRIMARY KEY (org_unit, year, data_element, combo, path)")
    op.execute(f"DROP INDEX {S}.year_total_unit")
    op.execute(f"CREATE TABLE {S}.year_total_pending (org_unit text NOT NULL, year int NOT NULL, "
               "data_element text NOT NULL, PRIMARY KEY (org_unit, year, data_element))")


def downgrade():
    op.execute(f"DROP TABLE {S}.year_total_pending")
    op.execute(f"CREATE INDEX year_total_unit ON {S}.year_total (org_unit, year)")
    op.execute(f"ALTER TABLE {S}.year_total DROP CONSTRAINT year_total_pkey")
    op.execute(f"ALTER TABLE {S}.year_total ADD CONSTRAINT year_total_pkey "
               "PRIMARY KEY (data_element, combo, org_unit, year, path)")
    op.execute(f"CREATE INDEX data_value_unit ON {S}.data_value (org_unit, start_date)")
    op.execute(f"ALTER TABLE {S}.data_value DROP CONSTRAINT data_value_pkey")
    op.execute(f"ALTER TABLE {S}.data_value ADD CONSTRAINT data_value_pkey "
               "PRIMARY KEY (data_element, combo, org_unit, period)")
