"""validation: the replica keeps a focal point's retirement day (registry 0004)

Revision ID: 0009
"""
from alembic import op

from shared.migrations import drop_replica_focal_point_retired_v1, replica_focal_point_retired_v1

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

S = "validation"


def upgrade():
    replica_focal_point_retired_v1(op, S)


def downgrade():
    drop_replica_focal_point_retired_v1(op, S)
