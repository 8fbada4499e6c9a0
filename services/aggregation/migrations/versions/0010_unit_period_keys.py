"""aggregation: a stored value's key orders the period before the element

``(org_unit, period, data_element, combo)`` instead of ``(org_unit, data_element,
combo, period)``. Both lead with the unit; what changes is where a new month's keys
land. Element first, a unit's month is a hundred keys, one beside each earlier
month of each (element, combo): a history chunk of 400 villages dirtied a leaf page
per key range (3,800-4,400 a chunk, each a full-page image in the WAL after a
checkpoint) and read 2,500-3,100 from the OS; period first, a unit-period's keys are
one range (2,550-3,200 dirtied, 820-1,460 read; tests/bench/RESULTS.md). A unit-year's
values, which every yearly rebuild reads, become one range too, where before they
were a range per element that also ran through every other year of that element.
Every statement keyed on all four columns (the upserts' conflict target, a value's
own lookup) is indifferent to their order.

Rebuilds the index under an exclusive lock: on a national database (10 million
values) about a minute.

Revision ID: 0010
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

S = "aggregation"


def _key(columns: str) -> None:
    op.execute(f"ALTER TABLE {S}.data_value DROP CONSTRAINT data_value_pkey, "
               f"ADD CONSTRAINT data_value_pkey PRIMARY KEY ({columns})")


def upgrade():
    _key("org_unit, period, data_element, combo")


def downgrade():
    _key("org_unit, data_element, combo, period")
