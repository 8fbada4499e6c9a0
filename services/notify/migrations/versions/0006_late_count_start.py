"""notify: the reporting start (STATNET_REPORTING_START) the latest deadline check judged by

A check runs an interval after the last one; an operator who set the go-live date and
restarted saw the late-returns gauge (and its alert) count the months before it, which went
on paper, for up to an hour. The timer now checks at once when the start differs from the
one recorded. Existing rows say none.

Revision ID: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

S = "notify"


def upgrade():
    op.add_column("late_count", sa.Column("reporting_start", sa.Date, nullable=True), schema=S)


def downgrade():
    op.drop_column("late_count", "reporting_start", schema=S)
