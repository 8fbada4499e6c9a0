"""Revisions that move data, run both ways on a real database."""
from __future__ import annotations

import sqlalchemy as sa

from shared import migrations
from shared.db import engine_for


def test_pending_yearly_totals_move_to_one_row_per_unit_year_and_back(settings):
    migrations.upgrade(settings, "aggregation", "0005")
    engine = engine_for(settings.database_url)
    keys = {("V1", 2020, "A"), ("V1", 2020, "B"), ("V1", 2021, "A"), ("V2", 2020, "ເດັກ")}
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO aggregation.year_total_pending (org_unit, year, data_element) "
                             "VALUES (:ou, :year, :de)"), [{"ou": o, "year": y, "de": d} for o, y, d in keys])

    migrations.upgrade(settings, "aggregation")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT org_unit, year, data_elements FROM aggregation.year_total_pending "
                                    "ORDER BY 1, 2")).all()
    assert [tuple(r) for r in rows] == [("V1", 2020, ["A", "B"]), ("V1", 2021, ["A"]), ("V2", 2020, ["ເດັກ"])]

    migrations.downgrade(settings, "aggregation", "0005")
    with engine.connect() as conn:
        back = conn.execute(sa.text("SELECT org_unit, year, data_element FROM aggregation.year_total_pending")).all()
    assert {tuple(r) for r in back} == keys
    migrations.upgrade(settings, "aggregation")
