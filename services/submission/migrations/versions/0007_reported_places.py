"""submission: the places a return reports for, when not its header's alone

A district's CSV of its villages (or a JSON return whose values name their own org units
and periods) reports for every (org unit, period) its values name; the return row is named
by its first line. Notify's deadline check asks which missing places have a return received
in time and on its way: by the header alone, the other villages of such a return were
alerted as late while it waited for validation. NULL for a return of its header's place
alone (nearly all). Returns still on their way (received, not yet aggregated or rejected)
get theirs from their values here; older ones keep NULL, as nothing asks about them.

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
    # a district's CSV waiting for validation across the upgrade: the next deadline check
    # would find it by its first line's place only (status_rank 2 is AGGREGATED)
    op.execute(f"""
        UPDATE {S}.return r SET place_org_units = p.ous, place_periods = p.pes
        FROM (SELECT id, array_agg(ou ORDER BY ou, pe) AS ous, array_agg(pe ORDER BY ou, pe) AS pes
              FROM (SELECT DISTINCT r.id, v ->> 'org_unit' AS ou, v ->> 'period' AS pe
                    FROM {S}.return r CROSS JOIN LATERAL json_array_elements(r.data_values) AS v
                    WHERE r.status_rank < 2 AND r.status <> 'REJECTED') AS v
              GROUP BY id) AS p
        WHERE r.id = p.id AND (cardinality(p.ous) > 1 OR p.ous[1] <> r.org_unit OR p.pes[1] <> r.period)
    """)


def downgrade():
    op.drop_index("return_of_places", "return", schema=S)
    op.drop_column("return", "place_periods", schema=S)
    op.drop_column("return", "place_org_units", schema=S)
