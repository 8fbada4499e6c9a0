"""aggregation: the replica keeps a data set's units taken out of its list (registry 0003)

Revision ID: 0014
"""
from alembic import op

from shared.migrations import drop_replica_assignment_ends_v1, replica_assignment_ends_v1

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

S = "aggregation"


def upgrade():
    replica_assignment_ends_v1(op, S)


def downgrade():
    drop_replica_assignment_ends_v1(op, S)
