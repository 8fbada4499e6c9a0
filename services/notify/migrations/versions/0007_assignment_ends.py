"""notify: the replica keeps a data set's units taken out of its list (registry 0003)

A unit taken out of a data set's orgUnits stays assigned for the periods begun before
the day it was (registry data_set.assignment_ends); the replica keeps the same.
Existing data sets have taken none out: nothing to fill.

Revision ID: 0007
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE notify.md_data_set ADD COLUMN assignment_ends jsonb NOT NULL DEFAULT '{}'")


def downgrade():
    op.execute("ALTER TABLE notify.md_data_set DROP COLUMN assignment_ends")
