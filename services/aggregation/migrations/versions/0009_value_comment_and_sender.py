"""aggregation: each stored value keeps its comment and who sent it

For ``GET /api/dataValueSets``, DHIS2's read-back of stored values (``comment``,
``storedBy``). Nullable columns without a default: adding them rewrites nothing.
Values stored before keep nulls (their comments are in submission's stored returns).

Revision ID: 0009
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    op.execute(f"ALTER TABLE {S}.data_value ADD COLUMN comment text, ADD COLUMN stored_by text")


def downgrade():
    op.execute(f"ALTER TABLE {S}.data_value DROP COLUMN comment, DROP COLUMN stored_by")
