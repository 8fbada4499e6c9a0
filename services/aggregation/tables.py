"""Tables of the aggregation service (schema ``aggregation``)."""
import sqlalchemy as sa

from shared.delivery import delivery_tables
from shared.replica import replica_tables

metadata = sa.MetaData(schema="aggregation")
outbox, inbox = delivery_tables(metadata)
replica = replica_tables(metadata)

# The accepted value of each (element, combo, unit, period): the latest by
# submission seq. ``path`` is the unit's place in the hierarchy as of the
# period's start, so a subtree total is a range scan on (element, path) and a
# unit moved to another district keeps its earlier periods with the old one.
# ``path`` sorts bytewise (COLLATE "C") so prefix ranges are exact.
data_value = sa.Table(
    "data_value", metadata,
    sa.Column("org_unit", sa.Text, nullable=False),
    sa.Column("data_element", sa.Text, nullable=False),
    sa.Column("combo", sa.Text, nullable=False),
    sa.Column("period", sa.Text, nullable=False),
    sa.Column("period_type", sa.Text, nullable=False),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=False),
    sa.Column("path", sa.Text(collation="C"), nullable=False),
    sa.Column("value", sa.Numeric),          # what aggregates count (None: text, or deleted)
    sa.Column("text_value", sa.Text),        # the value as stored
    sa.Column("deleted", sa.Boolean, nullable=False),  # tombstone: an older return can't bring it back
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("return_id", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("comment", sa.Text),           # the value's comment, as sent
    sa.Column("stored_by", sa.Text),         # the user whose return it came from (null: history)
    # DHIS2's followup: marked for a data-quality follow-up, as sent (migration 0013)
    sa.Column("followup", sa.Boolean, nullable=False, server_default=sa.false()),
    # a unit-period's values are one range of the key, and so is a unit-year's (migration 0010)
    sa.PrimaryKeyConstraint("org_unit", "period", "data_element", "combo", name="data_value_pkey"),
)

# Per unit and year, the statistics every aggregation type needs over the
# unit's finer (monthly, quarterly) values, per combo and for the total over
# combos ('*'). Recomputed from data_value for the (unit, year, element) keys a
# return touched, in the same transaction: exact by construction, and a year
# query for the whole country reads one row per unit instead of twelve.
# A unit moved during the year has one row per path it held. Every return rewrites
# its unit-year's rows, so no index holds the figures and pages keep room (fillfactor
# 70): most rewrites are heap-only updates that touch no index (migration 0007).
year_total = sa.Table(
    "year_total", metadata,
    sa.Column("org_unit", sa.Text, primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("data_element", sa.Text, primary_key=True),
    sa.Column("combo", sa.Text, primary_key=True),
    sa.Column("path", sa.Text(collation="C"), primary_key=True),
    sa.Column("s", sa.Numeric, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("last_start", sa.Date, nullable=False),
    sa.Column("last_value", sa.Numeric, nullable=False),
)

# Unit-years whose yearly rows a history chunk made stale, each with the chunk's elements
# (one row per unit-year and set of elements: the next month's chunk of the same data set
# is one conflict, not one per element); the YearTotalsRebuilder works through them in
# large batches
year_total_pending = sa.Table(
    "year_total_pending", metadata,
    sa.Column("org_unit", sa.Text, primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("data_elements", sa.ARRAY(sa.Text), primary_key=True),
)

# The number of the last history load begun (one row): loads are ordered by it (migration 0012)
history_clock = sa.Table(
    "history_clock", metadata,
    sa.Column("only_row", sa.Boolean, primary_key=True, server_default=sa.true()),
    sa.Column("last_load", sa.BigInteger, nullable=False),
)

# Completeness and timeliness: the first accepted return of each data set, unit and period.
completeness = sa.Table(
    "completeness", metadata,
    sa.Column("data_set", sa.Text, primary_key=True),
    sa.Column("org_unit", sa.Text, primary_key=True),
    sa.Column("period", sa.Text, primary_key=True),
    sa.Column("return_id", sa.Text, nullable=False),
    # on time or not is worked out when read, with the data set's timelyDays as it is then
    # (migration 0011); null for history's places: their receipt date is unknown
    sa.Column("received_at", sa.DateTime(timezone=True)),
    sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
)
