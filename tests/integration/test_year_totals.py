"""The yearly rebuild reads exactly its unit-year and elements: a unit's values of the years
either side, its yearly periods and the elements not asked stay out of the row it writes
(the rebuild reads a unit-year as one range of the stored values' key, and checks the
elements on that range's rows)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from services.aggregation.facts import rebuild_year_totals
from shared import migrations
from shared.db import engine_for

UNIT = "ບ້ານຮ່ວມປີ"  # a code of this test's own, in Lao


def _value(de: str, combo: str, period: str, ptype: str, start: str, value: int) -> dict:
    return {"de": de, "combo": combo, "pe": period, "ptype": ptype, "start": start, "value": value}


def test_a_rebuild_takes_its_year_and_elements_only(settings):
    migrations.upgrade(settings, "aggregation")
    engine = engine_for(settings.database_url)
    values = [
        _value(de, combo, period, ptype, start, value * (10 if combo == "F" else 1) * (100 if de == "B" else 1))
        for de in ("A", "B") for combo in ("M", "F")
        for period, ptype, start, value in (
            ("202412", "Monthly", "2024-12-01", 1000),     # the year before
            ("202501", "Monthly", "2025-01-01", 1),
            ("202502", "Monthly", "2025-02-01", 2),
            ("2025Q1", "Quarterly", "2025-01-01", 4),      # begins with January: a period of its own
            ("2025", "Yearly", "2025-01-01", 5000),        # a year's own value is no part of its rows
            ("202601", "Monthly", "2026-01-01", 3000),     # the year after
        )]
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO aggregation.data_value (org_unit, data_element, combo, period, period_type, start_date, "
            "end_date, path, value, text_value, deleted, seq, return_id) "
            "VALUES (:ou, :de, :combo, :pe, :ptype, CAST(:start AS date), CAST(:start AS date), '/LA/ຮ່ວມ/', "
            ":value, CAST(:value AS text), false, 1, 'r')"), [{"ou": UNIT, **v} for v in values])
    try:
        with engine.begin() as conn:
            rebuild_year_totals(conn, [(UNIT, 2025, "A")])
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT year, data_element, combo, s, n, last_start, last_value FROM aggregation.year_total "
                "WHERE org_unit = :ou ORDER BY combo"), {"ou": UNIT}).all()
        feb = dt.date(2025, 2, 1)
        assert [tuple(r) for r in rows] == [
            (2025, "A", "*", Decimal(77), 3, feb, Decimal(22)),   # (1+10) + (2+20) + (4+40), three periods
            (2025, "A", "F", Decimal(70), 3, feb, Decimal(20)),
            (2025, "A", "M", Decimal(7), 3, feb, Decimal(2)),
        ]
    finally:
        with engine.begin() as conn:
            for table in ("data_value", "year_total"):
                conn.execute(sa.text(f"DELETE FROM aggregation.{table} WHERE org_unit = :ou"), {"ou": UNIT})


def test_two_batches_at_once_on_the_same_values_count_them_once(settings):
    """Two aggregation batches at once (a restart with a backlog): the second read what was
    stored before the first committed, and told the first's new values as "imported" again
    (importCount and statnet_data_values_total counted them twice). It waits for the first
    now, on the unit-year's lock, before it reads."""
    import eventlet

    from services.aggregation.facts import apply_returns, lock_unit_years
    from tests.support.metadata import element, snapshot

    unit = "ບ້ານສອງຊຸດ"
    migrations.upgrade(settings, "aggregation")
    engine = engine_for(settings.database_url)
    md = snapshot({"LA": None, unit: "LA"}, elements=[element("A", combos=("M", "F"))])

    def sent(seq: int, value: int) -> dict:
        return {"return_id": f"two-{seq}", "seq": seq, "submitted_by": "t", "values": [
            {"data_element": "A", "category_option_combo": combo, "org_unit": unit, "period": "202503",
             "value": str(value), "comment": None} for combo in ("M", "F")]}

    def second() -> dict:
        with engine.begin() as conn:
            lock_unit_years(conn, [sent(2, 7)])
            return apply_returns(conn, [sent(2, 7)], md)["two-2"]

    try:
        with engine.begin() as conn:
            lock_unit_years(conn, [sent(1, 5)])
            assert apply_returns(conn, [sent(1, 5)], md)["two-1"]["imported"] == 2
            later = eventlet.spawn(second)
            eventlet.sleep(0.5)  # the second batch is waiting for this one
        assert later.wait() == {"imported": 0, "updated": 2, "ignored": 0, "deleted": 0}
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM aggregation.data_value WHERE org_unit = :ou"), {"ou": unit})
