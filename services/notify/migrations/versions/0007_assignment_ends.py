"""notify: the replica keeps a data set's units taken out of its list (registry 0003)

Revision ID: 0007
"""
from alembic import op

from shared.migrations import drop_replica_assignment_ends_v1, replica_assignment_ends_v1

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

S = "notify"


def upgrade():
    replica_assignment_ends_v1(op, S)


def downgrade():
    drop_replica_assignment_ends_v1(op, S)
