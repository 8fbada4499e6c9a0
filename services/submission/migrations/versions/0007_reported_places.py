"""submission: the places a return reports for, when not its header's alone

A district's CSV of its villages (or a JSON return whose values name their own org units
and periods) reports for every (org unit, period) its values name; the return row is named
by its first line. Notify's deadline check asks which missing places have a return received
in time and on its way: by the header alone, the other villages of such a return were
alerted as late while it waited for validation. NULL for a return of its header's place
alone (nearly all, and every return stored before this revision).

Revision ID: 0007
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

S = "submission"


def upgrade():
    op.add_column("return", sa.Column("place_org_units", ARRAY(sa.Text)), schema=S)
    op.add_column("return", sa.Column("place_periods", ARRAY(sa.Text)), schema=S)
    op.create_index("return_of_places", "return", ["data_set"], schema=S,
                    postgresql_where=sa.text("place_org_units IS NOT NULL"))


def downgrade():
    op.drop_index("return_of_places", "return", schema=S)
    op.drop_column("return", "place_periods", schema=S)
    op.drop_column("return", "place_org_units", schema=S)
