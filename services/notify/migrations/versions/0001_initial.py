"""notify: notifications, outbox, inbox, metadata replica

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

S = "notify"


def upgrade():
    create_delivery_tables_v1(op, S)
    create_replica_tables_v1(op, S)
    op.create_table(
        "notification",
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
        schema=S)
    # the dispatcher's queue: pending alerts by due time
    op.create_index("notification_due", "notification", ["next_attempt_at"], schema=S,
                    postgresql_where=sa.text("status = 'PENDING'"))
    op.create_index("notification_recipient", "notification", ["recipient", "type"], schema=S)


def downgrade():
    op.execute(f"DROP SCHEMA {S} CASCADE")
