"""aggregation: yearly rows rebuilt where two periods of an element began on one day

The yearly rebuild summed each period's combos by start date alone, so an element with
values in a monthly and a quarterly data set (January and Q1 both begin on 1 January)
had the two taken as one period: AVERAGE and AVERAGE_SUM_ORG_UNIT counted one period
too few and LAST added the two. Fixed in ``facts._REBUILD_YEARS``; the unit-years
holding such values are queued here, and the rebuilder recomputes them after start
(a rebuild is exact whatever it is given).

Revision ID: 0008
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    op.execute(f"""
        INSERT INTO {S}.year_total_pending (org_unit, year, data_elements)
        SELECT org_unit, year, array_agg(DISTINCT data_element ORDER BY data_element)
        FROM (SELECT org_unit, data_element, CAST(extract(year FROM start_date) AS int) AS year
              FROM {S}.data_value
              WHERE period_type <> 'Yearly' AND value IS NOT NULL
              GROUP BY org_unit, data_element, path, start_date
              HAVING count(DISTINCT period) > 1) shared_start
        GROUP BY org_unit, year
        ON CONFLICT DO NOTHING""")


def downgrade():
    pass  # the queued rebuilds are right under either code
