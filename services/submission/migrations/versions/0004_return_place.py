"""submission: an index of returns by place (data set, org unit, period)

Notify's deadline check asks, of the places it found missing, which have a return
received in time that is not rejected (one waiting for validation is not a missing
return); that is a lookup by place.

Revision ID: 0004
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("return_place", "return", ["data_set", "org_unit", "period"], schema="submission")


def downgrade():
    op.drop_index("return_place", "return", schema="submission")
