"""Tables of the registry (schema ``registry``)."""
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shared.delivery import delivery_tables

metadata = sa.MetaData(schema="registry")
outbox, inbox = delivery_tables(metadata)

# the registry's metadata version: bumped once per import that changed anything
state = sa.Table(
    "metadata_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)

org_unit = sa.Table(
    "org_unit", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("name_lo", sa.Text),
    sa.Column("opening_date", sa.Date, nullable=False),
    sa.Column("closed_date", sa.Date),
    sa.Column("generated", sa.Boolean, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# effective-dated parent links: the unit's parent from valid_from until valid_to (exclusive)
org_unit_link = sa.Table(
    "org_unit_link", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("valid_from", sa.Date, primary_key=True),
    sa.Column("valid_to", sa.Date),
    sa.Column("parent", sa.Text),
)

# derived from the links at every import: where each unit sits, over time
org_unit_path = sa.Table(
    "org_unit_path", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("valid_from", sa.Date, primary_key=True),
    sa.Column("valid_to", sa.Date),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
)

data_element = sa.Table(
    "data_element", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("name_lo", sa.Text),
    sa.Column("value_type", sa.Text, nullable=False),
    sa.Column("aggregation_type", sa.Text, nullable=False),
    sa.Column("combos", ARRAY(sa.Text), nullable=False),
    sa.Column("outliers", JSONB, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

data_set = sa.Table(
    "data_set", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("name_lo", sa.Text),
    sa.Column("period_type", sa.Text, nullable=False),
    sa.Column("data_elements", ARRAY(sa.Text), nullable=False),
    sa.Column("org_unit_level", sa.Integer),
    sa.Column("org_units", ARRAY(sa.Text), nullable=False),
    sa.Column("timely_days", sa.Integer, nullable=False),
    sa.Column("expiry_days", sa.Integer, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    # units taken out of ``org_units``, each with the day it was (YYYY-MM-DD): the periods
    # begun before stay theirs to correct and load, and count where they reported
    sa.Column("assignment_ends", JSONB, nullable=False, server_default="{}"),
)

validation_rule = sa.Table(
    "validation_rule", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("name_lo", sa.Text),
    sa.Column("importance", sa.Text, nullable=False),
    sa.Column("left", sa.Text, nullable=False),
    sa.Column("operator", sa.Text, nullable=False),
    sa.Column("right", sa.Text, nullable=False),
    sa.Column("missing_value_strategy", sa.Text, nullable=False),
    sa.Column("data_set", sa.Text),
    sa.Column("version", sa.BigInteger, nullable=False),
)

focal_point = sa.Table(
    "focal_point", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("org_unit", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("email", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("language", sa.Text, nullable=False),
    sa.Column("digest", sa.Boolean, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    # learned from traffic, not part of the metadata version
    sa.Column("last_active_at", sa.DateTime(timezone=True)),
    # the day the person left (DELETE /api/focalPoints/{code}): no alert is addressed to a
    # retired focal point, nor listed; kept, as what was sent to it is (named again in an
    # import or a PUT, it is active again)
    sa.Column("retired_on", sa.Date),
)

user_account = sa.Table(
    "user_account", metadata,
    sa.Column("username", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("org_unit", sa.Text),
    sa.Column("focal_point", sa.Text),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("token_rotated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# learned from traffic: the newest accepted return of each unit and data set
last_submission = sa.Table(
    "last_submission", metadata,
    sa.Column("org_unit", sa.Text, primary_key=True),
    sa.Column("data_set", sa.Text, primary_key=True),
    sa.Column("period", sa.Text, nullable=False),
    sa.Column("return_id", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
)
