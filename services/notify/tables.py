"""Tables of the notify service (schema ``notify``)."""
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.delivery import delivery_tables
from shared.replica import replica_tables

metadata = sa.MetaData(schema="notify")
outbox, inbox = delivery_tables(metadata)
replica = replica_tables(metadata)

# The outbox of alerts. The unique key is the contract's "at most once per
# (type, recipient, orgUnit, dataSet, period)", per channel: a second insert of
# the same alert, from a redelivery or a second notify instance, does nothing.
notification = sa.Table(
    "notification", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("org_unit", sa.Text, nullable=False),
    sa.Column("data_set", sa.Text, nullable=False),
    sa.Column("period", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("last_error", sa.Text),
    sa.Column("details", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("type", "recipient", "org_unit", "data_set", "period", "channel",
                        name="notification_once"),
)

# The first accepted return of each data set, unit and period: what the deadline
# check compares the expected units against (from return_validated, no lookups).
received = sa.Table(
    "received", metadata,
    sa.Column("data_set", sa.Text, primary_key=True),
    sa.Column("org_unit", sa.Text, primary_key=True),
    sa.Column("period", sa.Text, primary_key=True),
    sa.Column("return_id", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

# What the latest deadline check found late, per data set (0 when none): the gauge
# statnet_late_returns, read at each scrape, so it survives restarts and every notify
# instance says the same.
late_count = sa.Table(
    "late_count", metadata,
    sa.Column("data_set", sa.Text, primary_key=True),
    sa.Column("late", sa.Integer, nullable=False),
    # of how many whose deadline passed over the look-back (statnet_expected_returns)
    sa.Column("expected", sa.Integer, nullable=False, server_default="0"),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # the STATNET_REPORTING_START it judged by: another one set since is checked at once
    sa.Column("reporting_start", sa.Date, nullable=True),
)
