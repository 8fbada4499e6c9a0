"""Tables of the submission service (schema ``submission``)."""
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB

from shared.delivery import delivery_tables
from shared.replica import replica_tables

metadata = sa.MetaData(schema="submission")
outbox, inbox = delivery_tables(metadata)
replica = replica_tables(metadata)

# every return as received, and how far it has travelled
submission_return = sa.Table(
    "return", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    # a later return for the same values has a higher seq: consumers keep the newest
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
    sa.Column("data_set", sa.Text, nullable=False),
    sa.Column("org_unit", sa.Text, nullable=False),
    sa.Column("period", sa.Text, nullable=False),
    sa.Column("submitted_by", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("on_time", sa.Boolean, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("status_rank", sa.SmallInteger, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("body_sha256", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("body", sa.Text, nullable=False),
    # what went downstream, as the JSON text written: nothing queries inside it (migration 0003)
    sa.Column("data_values", JSON, nullable=False),
    sa.Column("value_count", sa.Integer, nullable=False),
    # the (org unit, period) of each place it reports for, side by side, when not the
    # header's alone (a district's CSV of its villages); NULL: the header's (migration 0007)
    sa.Column("place_org_units", ARRAY(sa.Text)),
    sa.Column("place_periods", ARRAY(sa.Text)),
    sa.Column("import_count", JSONB),
    sa.Column("violations", JSONB, nullable=False, server_default="[]"),
    sa.Column("validated_at", sa.DateTime(timezone=True)),
    sa.Column("aggregated_at", sa.DateTime(timezone=True)),
)
