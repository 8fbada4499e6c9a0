"""submission: the replica keeps a data set's units taken out of its list (registry 0003)

Revision ID: 0005
"""
from alembic import op

from shared.migrations import drop_replica_assignment_ends_v1, replica_assignment_ends_v1

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "submission"


def upgrade():
    replica_assignment_ends_v1(op, S)


def downgrade():
    drop_replica_assignment_ends_v1(op, S)
