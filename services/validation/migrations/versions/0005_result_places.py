"""validation: each result knows every place (org unit, period) its return reported

A district's CSV of its villages, or an ADX file of several groups, is one return: its
result was filed under its first place only, so ``GET /api/validationResults`` showed a
village's violation to the supervisor of whichever unit came first in the file (another
district's, outside the village's subtree) and not to the village's own. The places are
kept with the result (``places``: [[unit, period], ...]) and indexed by unit and by
period; existing results get them from their header and their violations' places.
The columns stay nullable: an instance of the previous version, still running during a
rolling upgrade, writes results without them, and the reader takes those by their header.

Revision ID: 0005
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "validation"


def upgrade():
    op.execute(f"""
        ALTER TABLE {S}.result ADD COLUMN places jsonb, ADD COLUMN org_units text[], ADD COLUMN periods text[];
        UPDATE {S}.result r SET places = p.places, org_units = p.units, periods = p.periods
        FROM (SELECT r2.return_id,
                     jsonb_agg(DISTINCT jsonb_build_array(x.ou, x.pe)) AS places,
                     array_agg(DISTINCT x.ou) AS units, array_agg(DISTINCT x.pe) AS periods
              FROM {S}.result r2
              CROSS JOIN LATERAL (
                  SELECT r2.org_unit AS ou, r2.period AS pe
                  UNION
                  SELECT v->>'org_unit', v->>'period' FROM jsonb_array_elements(r2.violations) v
                  WHERE v->>'org_unit' IS NOT NULL AND v->>'period' IS NOT NULL) x
              GROUP BY r2.return_id) p
        WHERE r.return_id = p.return_id;
        CREATE INDEX result_org_units ON {S}.result USING gin (org_units);
        CREATE INDEX result_periods ON {S}.result USING gin (periods);
    """)


def downgrade():
    op.execute(f"DROP INDEX {S}.result_org_units; DROP INDEX {S}.result_periods; "
               f"ALTER TABLE {S}.result DROP COLUMN places, DROP COLUMN org_units, DROP COLUMN periods")
