"""aggregation: the replica keeps a focal point's retirement day (registry 0004)

Revision ID: 0015
"""
from alembic import op

from shared.migrations import drop_replica_focal_point_retired_v1, replica_focal_point_retired_v1

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    replica_focal_point_retired_v1(op, S)


def downgrade():
    drop_replica_focal_point_retired_v1(op, S)
