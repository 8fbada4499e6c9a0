"""validation: results accepted before 0005 learn their places from the values they left

0005 gave existing results the places of their header and of their violations only: an
accepted district CSV of six villages with no violation stayed filed under its first line's
village, and ``GET /api/validationResults?ou=<village>`` missed it for the other five (an
upgrade probe). An accepted return's values are in ``accepted_value`` under its seq until a
later return replaces them: each result adds the places still holding its values. (A place
whose values a later return replaced shows that return, whose result lists it; a rejected
return left no values, and its violations name the places that matter.)

Revision ID: 0010
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

S = "validation"


def upgrade():
    op.execute(f"""
        UPDATE {S}.result r SET places = p.places, org_units = p.units, periods = p.periods
        FROM (SELECT x.return_id, jsonb_agg(DISTINCT jsonb_build_array(x.ou, x.pe)) AS places,
                     array_agg(DISTINCT x.ou) AS units, array_agg(DISTINCT x.pe) AS periods
              FROM (SELECT r2.return_id, pl->>0 AS ou, pl->>1 AS pe
                    FROM {S}.result r2 CROSS JOIN LATERAL jsonb_array_elements(coalesce(r2.places, '[]')) pl
                    WHERE r2.accepted
                    UNION
                    SELECT r2.return_id, v.org_unit, v.period
                    FROM {S}.result r2 JOIN {S}.accepted_value v ON v.seq = r2.seq
                    WHERE r2.accepted) x
              GROUP BY x.return_id) p
        WHERE r.return_id = p.return_id AND r.accepted
          AND p.places IS DISTINCT FROM r.places
    """)


def downgrade():
    pass  # the places added are true; 0005's downgrade drops the columns
