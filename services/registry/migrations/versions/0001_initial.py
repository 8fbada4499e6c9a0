"""registry: metadata, hierarchy over time, focal points, users

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shared.migrations import create_delivery_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "registry"


def upgrade():
    create_delivery_tables_v1(op, S)
    op.create_table("metadata_state",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("version", sa.BigInteger, nullable=False), schema=S)
    op.execute(f"INSERT INTO {S}.metadata_state (id, version) VALUES (1, 0)")
    op.create_table(
        "org_unit",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("opening_date", sa.Date, nullable=False),
        sa.Column("closed_date", sa.Date),
        sa.Column("generated", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False), schema=S)
    op.create_table(
        "org_unit_link",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("valid_from", sa.Date, primary_key=True),
        sa.Column("valid_to", sa.Date),
        sa.Column("parent", sa.Text), schema=S)
    op.create_index("org_unit_link_parent", "org_unit_link", ["parent"], schema=S)
    op.create_table(
        "org_unit_path",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("valid_from", sa.Date, primary_key=True),
        sa.Column("valid_to", sa.Date),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("level", sa.Integer, nullable=False), schema=S)
    op.execute(f"CREATE INDEX org_unit_path_path ON {S}.org_unit_path (path text_pattern_ops)")
    op.create_table(
        "data_element",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("value_type", sa.Text, nullable=False),
        sa.Column("aggregation_type", sa.Text, nullable=False),
        sa.Column("combos", ARRAY(sa.Text), nullable=False),
        sa.Column("outliers", JSONB, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False), schema=S)
    op.create_table(
        "data_set",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("period_type", sa.Text, nullable=False),
        sa.Column("data_elements", ARRAY(sa.Text), nullable=False),
        sa.Column("org_unit_level", sa.Integer),
        sa.Column("org_units", ARRAY(sa.Text), nullable=False),
        sa.Column("timely_days", sa.Integer, nullable=False),
        sa.Column("expiry_days", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False), schema=S)
    op.create_table(
        "validation_rule",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("importance", sa.Text, nullable=False),
        sa.Column("left", sa.Text, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("right", sa.Text, nullable=False),
        sa.Column("missing_value_strategy", sa.Text, nullable=False),
        sa.Column("data_set", sa.Text),
        sa.Column("version", sa.BigInteger, nullable=False), schema=S)
    op.create_table(
        "focal_point",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("org_unit", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("digest", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True)), schema=S)
    op.create_index("focal_point_org_unit", "focal_point", ["org_unit"], schema=S)
    op.create_table(
        "user_account",
        sa.Column("username", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("org_unit", sa.Text),
        sa.Column("focal_point", sa.Text),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("token_rotated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()), schema=S)
    op.create_table(
        "last_submission",
        sa.Column("org_unit", sa.Text, primary_key=True),
        sa.Column("data_set", sa.Text, primary_key=True),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("return_id", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False), schema=S)


def downgrade():
    op.execute(f"DROP SCHEMA {S} CASCADE")
