"""submission: a focal point's retirement day (DELETE /api/focalPoints/{code})

A supervisor who left could not be taken out: PUT could only empty the address, and each
deadline check then recorded alerts to them that FAILED for want of one, while coverage
still counted them. A retired focal point is kept (what was sent to them stays listed)
and addressed no more. None is retired yet.

Rolling upgrade: see upgrade() (what an old replica dropped is fetched again).

Revision ID: 0006
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE submission.md_focal_point ADD COLUMN retired_on date")
    # A retirement (or a data set's units taken out, revision before) that an instance of the
    # version before took while the registry was already new was dropped by its schema, yet
    # moved its version on: the next catch-up starts from nothing, and rewrites the focal
    # points and data sets (their versions set back; the rest is unchanged, left as it is)
    op.execute("UPDATE submission.md_focal_point SET version = 0")
    op.execute("UPDATE submission.md_data_set SET version = 0")
    op.execute("UPDATE submission.md_state SET version = 0")


def downgrade():
    op.execute("ALTER TABLE submission.md_focal_point DROP COLUMN retired_on")
