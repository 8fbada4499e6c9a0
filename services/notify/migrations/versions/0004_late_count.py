"""notify: what the latest deadline check found late, per data set (statnet_late_returns)

The gauge lived in the process that ran the check: a restart (or a second notify
instance) showed nothing until the next check, up to an hour later, and the
"late returns" alert cleared on every deploy. Kept here, every instance reports it.

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "notify"


def upgrade():
    op.create_table(
        "late_count",
        sa.Column("data_set", sa.Text, primary_key=True),
        sa.Column("late", sa.Integer, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S)


def downgrade():
    op.drop_table("late_count", schema=S)
