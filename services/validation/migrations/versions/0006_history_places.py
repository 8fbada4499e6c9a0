"""validation: places a history load gave values, for validation to take them in

Values loaded as history (``POST /api/history``) went to aggregation only, so a return
after a load was judged as if the past were empty: a rule across its values missed the
loaded ones (history F=98, a return's M=500 under "M <= F" accepted), and outliers had
no past to compare with until validation had accepted four periods itself. Aggregation's
``history_loaded`` event names the places; validation marks them here and asks for their
values when a return about the unit comes. History loaded before this revision is not
marked: loading the file again marks it (the values are unchanged).

Revision ID: 0006
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

S = "validation"


def upgrade():
    op.execute(f"""
        CREATE SEQUENCE {S}.history_place_marked;
        CREATE TABLE {S}.history_place (
            org_unit text NOT NULL,
            period text NOT NULL,
            marked bigint NOT NULL DEFAULT nextval('{S}.history_place_marked'),
            PRIMARY KEY (org_unit, period));
    """)


def downgrade():
    op.execute(f"DROP TABLE {S}.history_place; DROP SEQUENCE {S}.history_place_marked")
