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


def test_yearly_rows_moved_by_each_batch_equal_a_rebuild(settings, monkeypatch):
    """A return batch moves the yearly rows by what its values changed instead of summing
    their unit-years again (``update_year_totals``). Random batches of new values,
    corrections up and down, deletions, older returns arriving late, a month and the
    quarter starting with it, several periods in one return and a unit that moves: after
    every batch the rows are what a rebuild from the stored values gives (and a year's own
    value is no part of them)."""
    import random

    from services.aggregation import facts
    from services.aggregation.facts import apply_returns, lock_unit_years
    from services.aggregation.service import _value_keys
    from shared.batches import disjoint_runs
    from tests.support.metadata import element, snapshot

    units = ("ບ້ານໜຶ່ງ", "ບ້ານສອງ")
    before_move = snapshot({"LA": None, "ເມືອງກ": "LA", "ເມືອງຂ": "LA", units[0]: "ເມືອງກ", units[1]: "ເມືອງກ"},
                           elements=[element("A", combos=("M", "F")), element("B")])
    after_move = snapshot({"LA": None, "ເມືອງກ": "LA", "ເມືອງຂ": "LA", units[0]: "ເມືອງຂ", units[1]: "ເມືອງກ"},
                          elements=[element("A", combos=("M", "F")), element("B")])
    periods = ("202501", "202502", "202503", "2025Q1", "2025Q2", "202512", "202412", "2025")
    cells = [("A", "M"), ("A", "F"), ("B", "default")]
    rng = random.Random(20251128)
    migrations.upgrade(settings, "aggregation")
    engine = engine_for(settings.database_url)

    def figures(conn) -> list[tuple]:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT org_unit, year, data_element, combo, path, s, n, last_start, last_value "
            "FROM aggregation.year_total WHERE org_unit = ANY(:units) ORDER BY 1, 2, 3, 4, 5"),
            {"units": list(units)})]

    def a_return(seq: int) -> dict:
        unit = rng.choice(units)
        values = []
        for period in rng.sample(periods, rng.choice((1, 1, 1, 2))):
            for de, combo in rng.sample(cells, rng.randint(1, len(cells))):
                value = rng.choice(("", str(rng.randint(-5, 40)), str(rng.randint(0, 9)), "2.5"))
                values.append({"data_element": de, "category_option_combo": combo, "org_unit": unit,
                               "period": period, "value": value, "comment": None})
        return {"return_id": f"moved-{seq}", "seq": seq, "submitted_by": "t", "values": values}

    touched, rebuilt, seq = 0, [], 1000

    def counted(conn, keys):  # the keys moving could not give, rebuilt
        rebuilt.extend(keys)
        rebuild_year_totals(conn, keys)

    monkeypatch.setattr(facts, "rebuild_year_totals", counted)
    try:
        for batch in range(120):
            md = before_move if batch < 70 else after_move
            returns = []
            for _ in range(rng.randint(1, 4)):
                seq += 1
                # now and then a return older than what is stored arrives late (ignored)
                returns.append(a_return(seq - 500 if rng.random() < 0.1 else seq))
            returns.sort(key=lambda r: r["seq"])
            with engine.begin() as conn:
                lock_unit_years(conn, returns)
                for run in disjoint_runs(returns, _value_keys):
                    apply_returns(conn, run, md)
            touched += len({(v["org_unit"], v["period"][:4], v["data_element"]) for r in returns for v in r["values"]})
            with engine.connect() as conn:
                kept = figures(conn)
                keys = sorted({(ou, year, de) for ou in units for year in (2024, 2025) for de in ("A", "B")})
                rebuild_year_totals(conn, keys)
                assert kept == figures(conn), f"batch {batch}: {returns}"
                conn.rollback()
        assert 0 < len(rebuilt) < touched / 2  # both ways taken, moving the rule
    finally:
        with engine.begin() as conn:
            for table in ("data_value", "year_total"):
                conn.execute(sa.text(f"DELETE FROM aggregation.{table} WHERE org_unit = ANY(:units)"),
                             {"units": list(units)})


def test_a_return_on_values_whose_yearly_rows_wait_for_the_rebuilder_sums_their_key(settings):
    """A history load stores values and leaves their yearly rows to the rebuilder. A return
    that corrects one of them finds no row to move: its key is summed from the values
    (moving would have left the year without rows until the rebuilder came)."""
    from services.aggregation.facts import apply_returns, lock_unit_years
    from tests.support.metadata import element, snapshot

    unit = "ບ້ານລໍຖ້າ"
    md = snapshot({"LA": None, unit: "LA"}, elements=[element("A", combos=("M", "F")), element("B")])
    migrations.upgrade(settings, "aggregation")
    engine = engine_for(settings.database_url)
    other = {"return_id": "waiting-0", "seq": 1, "submitted_by": "t", "values": [   # the year has rows
        {"data_element": "B", "category_option_combo": "default", "org_unit": unit, "period": "202501",
         "value": "1", "comment": None}]}
    with engine.begin() as conn:
        lock_unit_years(conn, [other])
        apply_returns(conn, [other], md)
    with engine.begin() as conn:   # as a history chunk stores them: values, no yearly rows
        conn.execute(sa.text(
            "INSERT INTO aggregation.data_value (org_unit, data_element, combo, period, period_type, start_date, "
            "end_date, path, value, text_value, deleted, seq, return_id) "
            "VALUES (:ou, 'A', :combo, :pe, 'Monthly', CAST(:start AS date), CAST(:start AS date), :path, "
            ":value, CAST(:value AS text), false, 1, 'h')"),
            [{"ou": unit, "combo": combo, "pe": pe, "start": start, "path": f"/LA/{unit}/", "value": value}
             for combo, pe, start, value in (("M", "202501", "2025-01-01", 3), ("F", "202501", "2025-01-01", 4),
                                             ("M", "202502", "2025-02-01", 5))])
    correction = {"return_id": "waiting-1", "seq": 2, "submitted_by": "t", "values": [
        {"data_element": "A", "category_option_combo": "M", "org_unit": unit, "period": "202502", "value": "6",
         "comment": None}]}
    try:
        with engine.begin() as conn:
            lock_unit_years(conn, [correction])
            apply_returns(conn, [correction], md)
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.text(
                "SELECT combo, s, n, last_start, last_value FROM aggregation.year_total "
                "WHERE org_unit = :ou AND data_element = 'A' ORDER BY combo"), {"ou": unit})]
        feb = dt.date(2025, 2, 1)
        assert rows == [("*", Decimal(13), 2, feb, Decimal(6)), ("F", Decimal(4), 1, dt.date(2025, 1, 1), Decimal(4)),
                        ("M", Decimal(9), 2, feb, Decimal(6))]
    finally:
        with engine.begin() as conn:
            for table in ("data_value", "year_total"):
                conn.execute(sa.text(f"DELETE FROM aggregation.{table} WHERE org_unit = :ou"), {"ou": unit})


def test_a_move_waits_for_a_batch_writing_by_the_old_paths_and_re_paths_what_it_wrote(settings):
    """A batch read the metadata before a village moved and wrote its months after the move
    had re-pathed the stored values: they stayed in the old district for good (a probe's
    race). The move's re-path now waits for a batch under way, then re-paths what it wrote."""
    import datetime as dt_

    import eventlet

    from services.aggregation.facts import apply_returns, lock_unit_years
    from services.aggregation.service import _repath_moved_units
    from tests.support.metadata import element, snapshot

    unit = "ບ້ານຍ້າຍ"
    old_md = snapshot({"LA": None, "ເມືອງເກົ່າ": "LA", "ເມືອງໃໝ່": "LA", unit: "ເມືອງເກົ່າ"},
                      elements=[element("A")])
    new_path = f"/LA/ເມືອງໃໝ່/{unit}/"
    sent = {"return_id": "moving-1", "seq": 1, "submitted_by": "t", "values": [
        {"data_element": "A", "category_option_combo": "default", "org_unit": unit, "period": period,
         "value": "5", "comment": None} for period in ("202603", "202604")]}
    migrations.upgrade(settings, "aggregation")
    engine = engine_for(settings.database_url)
    moved_at = []

    def move():
        with engine.begin() as conn:
            _repath_moved_units(conn, {"org_units": [{"code": unit, "paths": [
                {"path": f"/LA/ເມືອງເກົ່າ/{unit}/", "valid_from": dt_.date(2000, 1, 1), "valid_to": dt_.date(2026, 3, 1)},
                {"path": new_path, "valid_from": dt_.date(2026, 3, 1), "valid_to": None}]}]})
        moved_at.append(True)

    try:
        with engine.begin() as conn:
            lock_unit_years(conn, [sent])
            apply_returns(conn, [sent], old_md)       # by the old metadata: the old district's path
            mover = eventlet.spawn(move)
            eventlet.sleep(0.5)
            assert not moved_at                        # the move waits for this batch
        mover.wait()
        with engine.connect() as conn:
            paths = {r.period: r.path for r in conn.execute(sa.text(
                "SELECT period, path FROM aggregation.data_value WHERE org_unit = :ou"), {"ou": unit})}
            years = {r.path for r in conn.execute(sa.text(
                "SELECT path FROM aggregation.year_total WHERE org_unit = :ou"), {"ou": unit})}
        assert paths == {"202603": new_path, "202604": new_path} and years == {new_path}
    finally:
        with engine.begin() as conn:
            for table in ("data_value", "year_total"):
                conn.execute(sa.text(f"DELETE FROM aggregation.{table} WHERE org_unit = :ou"), {"ou": unit})
