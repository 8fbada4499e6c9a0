"""notify: a focal point's retirement day (DELETE /api/focalPoints/{code})

A supervisor who left could not be taken out: PUT could only empty the address, and each
deadline check then recorded alerts to them that FAILED for want of one, while coverage
still counted them. A retired focal point is kept (what was sent to them stays listed)
and addressed no more. None is retired yet.

Revision ID: 0008
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE notify.md_focal_point ADD COLUMN retired_on date")


def downgrade():
    op.execute("ALTER TABLE notify.md_focal_point DROP COLUMN retired_on")
