"""registry: a data set's units taken out of its list, and the day each was

A data set's ``orgUnits`` was its assignment for every period: a unit taken out lost its
past too (completeness of last year no longer expected it, nor counted its return, while
analytics still summed its values). Each unit taken out is kept with the day it was: for
the periods begun before then it still counts where it reported, and may correct them.

Revision ID: 0003
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE registry.data_set ADD COLUMN assignment_ends jsonb NOT NULL DEFAULT '{}'")


def downgrade():
    op.execute("ALTER TABLE registry.data_set DROP COLUMN assignment_ends")
