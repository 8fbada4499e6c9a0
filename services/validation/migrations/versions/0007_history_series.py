"""validation: history taken in as one row per series

Revision 0006 took what history loads brought into ``accepted_value``, a row per value:
a village's first return after a national load copied its 1,200 loaded values, half that
return's cost (national benchmark: 66 returns/s, 11.7 ms of PostgreSQL a return more).
Loaded values now live in ``history_series``, one row per (unit, element, combo, period
type) with its periods, values and loads' seqs as arrays; ``accepted_value`` keeps the
returns' values only (seq > 0), which win over a load's at the same place, as before.
The loaded values already taken in move over.

Old code cannot live with this: stop every validation instance before the new one starts.
An old instance still running judges with the loaded values it took in gone from
``accepted_value`` (an upgrade probe saw it accept returns a HIGH rule against the loaded
past rejects). Upgrade aggregation first: it answers both ``history_series`` and the old
``history_of_places`` (a row per value, for validation instances of the version before);
a new validation asking an aggregation of the version before holds the batch for a retry,
as when aggregation is down.

Revision ID: 0007
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

S = "validation"


def upgrade():
    op.execute(f"""
        CREATE TABLE {S}.history_series (
            org_unit text NOT NULL,
            data_element text NOT NULL,
            combo text NOT NULL,
            period_type text NOT NULL,
            periods text[] NOT NULL,
            figures numeric[] NOT NULL,
            seqs bigint[] NOT NULL,
            PRIMARY KEY (org_unit, data_element, combo, period_type));
        INSERT INTO {S}.history_series
        SELECT org_unit, data_element, combo, period_type, array_agg(period ORDER BY period),
               array_agg(value ORDER BY period), array_agg(seq ORDER BY period)
        FROM {S}.accepted_value WHERE seq <= 0
        GROUP BY org_unit, data_element, combo, period_type;
        DELETE FROM {S}.accepted_value WHERE seq <= 0;
    """)


def downgrade():
    op.execute(f"""
        INSERT INTO {S}.accepted_value (org_unit, data_element, combo, period, period_type, value, seq)
        SELECT h.org_unit, h.data_element, h.combo, l.period, h.period_type, l.figure, l.seq
        FROM {S}.history_series h, unnest(h.periods, h.figures, h.seqs) AS l(period, figure, seq)
        ON CONFLICT DO NOTHING;
        DROP TABLE {S}.history_series;
    """)
