"""aggregation: whether a return came in time is worked out when read, not kept

``onTime`` follows the data set's ``timelyDays`` as it is now (DHIS2 computes timeliness
in analytics from the current setting): a province that gives districts 30 days instead
of 10 sees last month's returns on time at once. So completeness keeps when each place's
first accepted return was received, and no longer a verdict taken with the setting of
that day. History's places have no receipt date (``received_at`` null: never on time).

``on_time`` stays, unread, with a default: instances of the version before go on writing
and reading it during a rolling upgrade (dropping it here dead-lettered every return an
old aggregation instance took after the first new one migrated). A later revision drops
it once no such instance runs.

Revision ID: 0011
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE aggregation.completeness ALTER COLUMN received_at DROP NOT NULL")
    op.execute("UPDATE aggregation.completeness SET received_at = NULL WHERE return_id LIKE 'history:%'")
    op.execute("ALTER TABLE aggregation.completeness ALTER COLUMN on_time SET DEFAULT false")


def downgrade():
    # (a database migrated by this revision's first form has no on_time)
    op.execute("ALTER TABLE aggregation.completeness ADD COLUMN IF NOT EXISTS on_time boolean NOT NULL DEFAULT false")
    op.execute("UPDATE aggregation.completeness SET received_at = accepted_at WHERE received_at IS NULL")
    op.execute("ALTER TABLE aggregation.completeness ALTER COLUMN received_at SET NOT NULL")
