"""aggregation: history loads are numbered in the order they begin

A history value's seq orders loads by their start; it was the start's second, so two
loads begun in the same second (a correction posted right after a chunk, by a script)
were ordered by their lines instead, and the later correction could lose. Loads now take
a number from this one-row clock: strictly increasing, and never below the second of
their start, so they still come after every load stored before this revision.

Old instances ignore the table (they go on numbering loads by the second).

Revision ID: 0012
"""
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
        CREATE TABLE aggregation.history_clock (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            last_load bigint NOT NULL)""")
    op.execute("INSERT INTO aggregation.history_clock (last_load) VALUES (0)")


def downgrade():
    op.execute("DROP TABLE aggregation.history_clock")
