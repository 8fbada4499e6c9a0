"""validation: accepted values by place (org unit, period)

Judging a return reads every stored value of each place it sends values for.
The primary key leads with the unit but then the element: a place lookup
scanned all the unit's values of every period, more with every year reported.

Revision ID: 0004
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "validation"


def upgrade():
    op.execute(f"CREATE INDEX accepted_value_place ON {S}.accepted_value (org_unit, period)")


def downgrade():
    op.execute(f"DROP INDEX {S}.accepted_value_place")
