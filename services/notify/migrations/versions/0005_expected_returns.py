"""notify: how many returns fell due over the look-back of the latest deadline check, per
data set (statnet_expected_returns), beside how many of them are late

A late count alone fired the late-returns alert from go-live for good (every month of the
look-back went on paper) and for ever for a large province's few units that never report;
the alert now judges the share. Existing rows say 0 until the next check.

Revision ID: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "notify"


def upgrade():
    op.add_column("late_count", sa.Column("expected", sa.Integer, nullable=False, server_default="0"), schema=S)


def downgrade():
    op.drop_column("late_count", "expected", schema=S)
