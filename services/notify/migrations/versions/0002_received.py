"""notify: first accepted return per data set, unit and period (for the deadline check)

Revision ID: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "notify"


def upgrade():
    op.create_table(
        "received",
        sa.Column("data_set", sa.Text, primary_key=True),
        sa.Column("org_unit", sa.Text, primary_key=True),
        sa.Column("period", sa.Text, primary_key=True),
        sa.Column("return_id", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        schema=S)


def downgrade():
    op.drop_table("received", schema=S)
