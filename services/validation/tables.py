"""Tables of the validation service (schema ``validation``)."""
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shared.delivery import delivery_tables
from shared.replica import replica_tables

metadata = sa.MetaData(schema="validation")
outbox, inbox = delivery_tables(metadata)
replica = replica_tables(metadata)

# the decision on each return, with its violations
validation_result = sa.Table(
    "result", metadata,
    sa.Column("return_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("data_set", sa.Text, nullable=False),
    sa.Column("org_unit", sa.Text, nullable=False),
    sa.Column("period", sa.Text, nullable=False),
    sa.Column("accepted", sa.Boolean, nullable=False),
    sa.Column("violations", JSONB, nullable=False),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # every (unit, period) the return reported, and their units and periods for the indexes:
    # a multi-place return is listed to each place's subtree (migration 0005). Null in a
    # result written by an instance of the version before (a rolling upgrade): its header
    sa.Column("places", JSONB),
    sa.Column("org_units", ARRAY(sa.Text)),
    sa.Column("periods", ARRAY(sa.Text)),
)

# The latest accepted numeric value of each (unit, element, combo, period), by submission
# seq (value NULL: deleted), from returns (loads' values are in ``history_series``).
# Rules are judged on these merged with a new return, and outliers against a unit's
# previous periods; validation reads no other service's tables.
accepted_value = sa.Table(
    "accepted_value", metadata,
    sa.Column("org_unit", sa.Text, primary_key=True),
    sa.Column("data_element", sa.Text, primary_key=True),
    sa.Column("combo", sa.Text, primary_key=True),
    sa.Column("period", sa.Text, primary_key=True),
    sa.Column("period_type", sa.Text, nullable=False),
    sa.Column("value", sa.Numeric),
    sa.Column("seq", sa.BigInteger, nullable=False),
)

# What history loads brought, taken in from aggregation (``_take_history``): one row per
# series (unit, element, combo, period type), its periods in order beside their values
# (null: deleted by a load) and the loads' seqs (<= 0; the later load's value is kept).
# A village's loaded year is a hundred rows, not 1,200: taken in on the first return about
# the unit after a load, a row per value was half the cost of that return (national
# benchmark). A return's value for the same place, in ``accepted_value``, always wins.
history_series = sa.Table(
    "history_series", metadata,
    sa.Column("org_unit", sa.Text, primary_key=True),
    sa.Column("data_element", sa.Text, primary_key=True),
    sa.Column("combo", sa.Text, primary_key=True),
    sa.Column("period_type", sa.Text, primary_key=True),
    sa.Column("periods", ARRAY(sa.Text), nullable=False),
    sa.Column("figures", ARRAY(sa.Numeric), nullable=False),
    sa.Column("seqs", ARRAY(sa.BigInteger), nullable=False),
)

# Places (unit, period) a history load gave values since validation last took them: the
# values themselves stay in aggregation until a return about the unit is judged, which
# first asks for them (``ValidationService._take_history``). Copied on every load, the
# country's past years would pass through here whether or not a return ever met them.
# ``marked`` grows with each mark, so a place loaded again while its values were on
# their way keeps its new mark.
history_marked = sa.Sequence("history_place_marked", metadata=metadata)
history_place = sa.Table(
    "history_place", metadata,
    sa.Column("org_unit", sa.Text, primary_key=True),
    sa.Column("period", sa.Text, primary_key=True),
    sa.Column("marked", sa.BigInteger, history_marked, server_default=history_marked.next_value(),
              nullable=False),
)
