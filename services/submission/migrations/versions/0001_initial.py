"""submission: returns, outbox, inbox, metadata replica

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.migrations import create_delivery_tables_v1, create_replica_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "submission"


def upgrade():
    create_delivery_tables_v1(op, S)
    create_replica_tables_v1(op, S)
    op.create_table(
        "return",
        sa.Column("id", sa.Text, primary_key=True),
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
        sa.Column("data_values", JSONB, nullable=False),
        sa.Column("value_count", sa.Integer, nullable=False),
        sa.Column("import_count", JSONB),
        sa.Column("violations", JSONB, nullable=False, server_default="[]"),
        sa.Column("validated_at", sa.DateTime(timezone=True)),
        sa.Column("aggregated_at", sa.DateTime(timezone=True)),
        schema=S)
    # one Idempotency-Key per user
    op.create_index("return_idempotency", "return", ["submitted_by", "idempotency_key"], unique=True,
                    schema=S, postgresql_where=sa.text("idempotency_key IS NOT NULL"))
    # the user's latest return for a data set, unit and period (byte-identical resubmission)
    op.create_index("return_latest", "return", ["submitted_by", "data_set", "org_unit", "period", "seq"],
                    schema=S)
    op.create_index("return_status", "return", ["status_rank"], schema=S)


def downgrade():
    op.execute(f"DROP SCHEMA {S} CASCADE")
