"""validation: accepted values, for rules on the merged view and outliers on history

Revision ID: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "validation"


def upgrade():
    op.create_table(
        "accepted_value",
        sa.Column("org_unit", sa.Text, primary_key=True),
        sa.Column("data_element", sa.Text, primary_key=True),
        sa.Column("combo", sa.Text, primary_key=True),
        sa.Column("period", sa.Text, primary_key=True),
        sa.Column("period_type", sa.Text, nullable=False),
        sa.Column("value", sa.Numeric),
        sa.Column("seq", sa.BigInteger, nullable=False),
        schema=S)
    # validation results by data set and period within a unit list (GET /api/validationResults)
    op.create_index("result_period", "result", ["period", "data_set"], schema=S)


def downgrade():
    op.drop_index("result_period", "result", schema=S)
    op.drop_table("accepted_value", schema=S)
