"""Tables of the validation service (schema ``validation``)."""
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

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
)
