"""aggregation: a value's DHIS2 followup flag

DHIS2 marks values for a data-quality follow-up; its exports carry the mark
(``followup``), and history brought over from DHIS2 lost it: read and dropped, and
exported as false. Kept now, as sent.

Old instances leave the column to its default (false): they wrote no mark before either.

Revision ID: 0013
"""
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    # a constant default: no table rewrite (PostgreSQL 11 on), however many values are stored
    op.execute("ALTER TABLE aggregation.data_value ADD COLUMN followup boolean NOT NULL DEFAULT false")


def downgrade():
    op.execute("ALTER TABLE aggregation.data_value DROP COLUMN followup")
