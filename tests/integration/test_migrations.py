"""Revisions that move or retype data, run both ways on a real database."""
from __future__ import annotations

import json

import sqlalchemy as sa

from shared import migrations
from shared.db import engine_for
from tests.support.processes import cli


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


def test_a_returns_values_move_to_json_text_and_back(settings):
    migrations.upgrade(settings, "submission", "0002")
    engine = engine_for(settings.database_url)
    values = [{"data_element": "POP", "category_option_combo": "F", "org_unit": "030101", "period": "202609",
               "value": "12", "comment": "ບ້ານ ນ້ຳທາ"}]
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO submission.return (id, data_set, org_unit, period, submitted_by, received_at, on_time, "
            "status, status_rank, content_type, body_sha256, body, data_values, value_count) VALUES ('r1', 'DS', "
            "'030101', '202609', 'u', now(), true, 'RECEIVED', 0, 'application/json', 'x', '{}', "
            "CAST(:v AS jsonb), 1)"), {"v": json.dumps(values)})

    def stored() -> tuple[str, list]:
        with engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT pg_typeof(data_values)::text AS type, data_values FROM submission.return")).one()
        return row.type, row.data_values

    migrations.upgrade(settings, "submission")
    assert stored() == ("json", values)
    migrations.downgrade(settings, "submission", "0002")
    assert stored() == ("jsonb", values)
    migrations.upgrade(settings, "submission")


def test_yearly_rows_lose_their_figures_from_the_subtree_index_and_get_them_back(settings):
    migrations.upgrade(settings, "aggregation")  # wherever an earlier test left it, then back
    migrations.downgrade(settings, "aggregation", "0006")
    engine = engine_for(settings.database_url)
    row = {"de": "POP", "combo": "*", "ou": "ບ້ານນ້ຳທາ", "year": 2025, "path": "/LA/03/0301/", "s": 12.5, "n": 2,
           "last": "2025-02-01", "v": 7}
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO aggregation.year_total (data_element, combo, org_unit, year, path, s, n, last_start, "
            "last_value) VALUES (:de, :combo, :ou, :year, :path, :s, :n, :last, :v)"), row)

    def shape() -> tuple[str, list | None]:
        with engine.connect() as conn:
            index = conn.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE schemaname = 'aggregation' "
                                         "AND indexname = 'year_total_subtree'")).scalar()
            options = conn.execute(sa.text("SELECT reloptions FROM pg_class "
                                           "WHERE oid = 'aggregation.year_total'::regclass")).scalar()
            # the question the index serves still finds the row
            found = conn.execute(sa.text(
                "SELECT org_unit, s, n FROM aggregation.year_total WHERE data_element = 'POP' AND year = 2025 "
                "AND combo = '*' AND path >= '/LA/' AND path < '/LA0'")).one()
        assert tuple(found) == ("ບ້ານນ້ຳທາ", 12.5, 2)
        return index.split("INCLUDE")[1], options

    assert shape() == (" (org_unit, s, n, last_start, last_value)", None)
    migrations.upgrade(settings, "aggregation")
    assert shape() == (" (org_unit)", ["fillfactor=70"])
    migrations.downgrade(settings, "aggregation", "0006")
    assert shape() == (" (org_unit, s, n, last_start, last_value)", None)
    migrations.upgrade(settings, "aggregation")


def test_results_learn_the_places_of_their_returns_from_header_and_violations(settings):
    migrations.upgrade(settings, "validation", "0004")
    engine = engine_for(settings.database_url)
    violations = [{"rule": "R", "importance": "HIGH", "operator": "greater_than", "org_unit": "V2", "period": "202602"},
                  {"rule": "R", "importance": "HIGH", "operator": "greater_than", "org_unit": "V1", "period": "202601"}]
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO validation.result (return_id, seq, data_set, org_unit, period, accepted, violations) "
            "VALUES ('m1', 1, 'DS', 'V1', '202601', false, CAST(:v AS jsonb)), "
            "('m2', 2, 'DS', 'ບ້ານ', '2026', true, '[]')"), {"v": json.dumps(violations)})
    migrations.upgrade(settings, "validation")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT return_id, places, org_units, periods FROM validation.result "
                                    "WHERE return_id IN ('m1', 'm2') ORDER BY 1")).all()
    assert [tuple(r) for r in rows] == [
        ("m1", [["V1", "202601"], ["V2", "202602"]], ["V1", "V2"], ["202601", "202602"]),
        ("m2", [["ບ້ານ", "2026"]], ["ບ້ານ"], ["2026"])]
    migrations.downgrade(settings, "validation", "0004")
    migrations.upgrade(settings, "validation")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM validation.result WHERE return_id IN ('m1', 'm2')"))


def test_accepted_results_learn_the_places_their_values_hold(settings):
    """An accepted district CSV of several villages, with no violation, was filed under its
    first line's village by 0005; 0010 adds the places still holding its values."""
    migrations.upgrade(settings, "validation")  # wherever an earlier test left it, then back
    migrations.downgrade(settings, "validation", "0009")
    engine = engine_for(settings.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO validation.result (return_id, seq, data_set, org_unit, period, accepted, violations, "
            "places, org_units, periods) VALUES "
            "('d1', 71, 'DS', 'V1', '202601', true, '[]', '[[\"V1\", \"202601\"]]', '{V1}', '{202601}'), "
            "('d2', 72, 'DS', 'V1', '202602', false, '[]', '[[\"V1\", \"202602\"]]', '{V1}', '{202602}')"))
        conn.execute(sa.text(
            "INSERT INTO validation.accepted_value (org_unit, data_element, combo, period, period_type, value, seq) "
            "VALUES ('V1', 'E', 'default', '202601', 'Monthly', 1, 71), ('ບ້ານ2', 'E', 'default', '202601', "
            "'Monthly', 2, 71), ('V3', 'E', 'default', '202601', 'Monthly', 3, 99)"))
    migrations.upgrade(settings, "validation")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT return_id, places, org_units FROM validation.result "
                                    "WHERE return_id IN ('d1', 'd2') ORDER BY 1")).all()
    assert [(r.return_id, sorted(r.places), sorted(r.org_units)) for r in rows] == [
        ("d1", [["V1", "202601"], ["ບ້ານ2", "202601"]], ["V1", "ບ້ານ2"]),
        ("d2", [["V1", "202602"]], ["V1"])]  # (rejected: nothing of it stored)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM validation.result WHERE return_id IN ('d1', 'd2')"))
        conn.execute(sa.text("DELETE FROM validation.accepted_value WHERE seq IN (71, 99)"))


def test_stored_values_key_by_unit_and_period_and_back(settings):
    migrations.upgrade(settings, "aggregation")
    migrations.downgrade(settings, "aggregation", "0009")
    engine = engine_for(settings.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO aggregation.data_value (org_unit, data_element, combo, period, period_type, start_date, "
            "end_date, path, value, text_value, deleted, seq, return_id) VALUES ('ບ້ານນ້ຳທາ', 'POP', 'F', '202609', "
            "'Monthly', '2026-09-01', '2026-09-30', '/LA/03/', 12, '12', false, 1, 'r1')"))

    def key() -> str:
        with engine.connect() as conn:
            index = conn.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE schemaname = 'aggregation' "
                                         "AND indexname = 'data_value_pkey'")).scalar()
            # the value is still there, and still found by its key
            assert conn.execute(sa.text(
                "SELECT value FROM aggregation.data_value WHERE org_unit = 'ບ້ານນ້ຳທາ' AND period = '202609' "
                "AND data_element = 'POP' AND combo = 'F'")).scalar() == 12
        return index.split("USING btree ")[1]

    assert key() == "(org_unit, data_element, combo, period)"
    migrations.upgrade(settings, "aggregation")
    assert key() == "(org_unit, period, data_element, combo)"
    migrations.downgrade(settings, "aggregation", "0009")
    assert key() == "(org_unit, data_element, combo, period)"
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM aggregation.data_value WHERE return_id = 'r1'"))
    migrations.upgrade(settings, "aggregation")


def test_completeness_keeps_on_time_for_instances_of_the_version_before(settings):
    """0011 dropped completeness.on_time, which aggregation before it writes and reads: in a
    rolling upgrade an old instance dead-lettered every return it took after the first new
    one migrated. The column stays, with a default, and the new code's rows read back."""
    migrations.upgrade(settings, "aggregation")
    engine = engine_for(settings.database_url)
    with engine.begin() as conn:
        # as the version before writes and reads a place
        conn.execute(sa.text("INSERT INTO aggregation.completeness (data_set, org_unit, period, return_id, "
                             "received_at, accepted_at, on_time) VALUES ('DSMIG', 'ບ້ານ', '202611', 'r1', now(), "
                             "now(), true)"))
        # as this version writes one (no on_time)
        conn.execute(sa.text("INSERT INTO aggregation.completeness (data_set, org_unit, period, return_id, "
                             "received_at, accepted_at) VALUES ('DSMIG', 'V2', '202611', 'r2', NULL, now())"))
        rows = conn.execute(sa.text("SELECT org_unit, on_time FROM aggregation.completeness "
                                    "WHERE data_set = 'DSMIG' ORDER BY return_id")).all()
        assert [tuple(r) for r in rows] == [("ບ້ານ", True), ("V2", False)]
        conn.execute(sa.text("DELETE FROM aggregation.completeness WHERE data_set = 'DSMIG'"))


def test_loaded_values_taken_in_move_to_one_row_per_series_and_back(settings):
    """0007: what history loads brought, taken into ``accepted_value`` a row per value
    (seq <= 0), moves to ``history_series``; the returns' values (seq > 0) stay."""
    migrations.upgrade(settings, "validation")
    migrations.downgrade(settings, "validation", "0006")
    engine = engine_for(settings.database_url)
    rows = [("ບ້ານ-MIG", "POP", "F", "202602", None, -3), ("ບ້ານ-MIG", "POP", "F", "202601", 12, -7),
            ("ບ້ານ-MIG", "POP", "F", "202603", 40, 9), ("ບ້ານ-MIG", "POP", "M", "202601", 5, 0)]
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO validation.accepted_value (org_unit, data_element, combo, period, period_type, value, seq) "
            "VALUES (:ou, :de, :coc, :pe, 'Monthly', :v, :seq)"),
            [dict(zip(("ou", "de", "coc", "pe", "v", "seq"), r)) for r in rows])

    def stored():
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT combo, period, value, seq FROM validation.accepted_value WHERE org_unit = 'ບ້ານ-MIG' "
                "ORDER BY 1, 2")).all()

    migrations.upgrade(settings, "validation")
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(sa.text(
            "SELECT combo, period_type, periods, figures, seqs FROM validation.history_series "
            "WHERE org_unit = 'ບ້ານ-MIG' ORDER BY combo"))] == [
            ("F", "Monthly", ["202601", "202602"], [12, None], [-7, -3]),
            ("M", "Monthly", ["202601"], [5], [0])]
    assert [tuple(r) for r in stored()] == [("F", "202603", 40, 9)]
    migrations.downgrade(settings, "validation", "0006")
    assert sorted(tuple(r) for r in stored()) == sorted((coc, pe, v, seq) for _, _, coc, pe, v, seq in rows)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM validation.accepted_value WHERE org_unit = 'ບ້ານ-MIG'"))
    migrations.upgrade(settings, "validation")


def test_returns_on_their_way_learn_the_places_they_report_for(settings):
    """Submission 0007: a district's CSV waiting for validation across the upgrade is found by
    every place it reports for at the next deadline check, not by its first line's alone."""
    migrations.upgrade(settings, "submission")  # wherever an earlier test left it, then back
    migrations.downgrade(settings, "submission", "0006")
    engine = engine_for(settings.database_url)

    def values(*places):
        return json.dumps([{"data_element": "POP", "category_option_combo": "F", "org_unit": ou, "period": pe,
                            "value": "1", "comment": None} for ou, pe in places])

    sent = {  # id: (status, rank, header, the places of its values)
        "m-received": ("RECEIVED", 0, ("V1", "202609"), [("V2", "202609"), ("V1", "202609"), ("V1", "202610")]),
        "m-validated": ("VALIDATED", 1, ("V1", "202609"), [("ບ້ານ", "202609"), ("V1", "202609")]),
        "m-aggregated": ("AGGREGATED", 2, ("V1", "202609"), [("V2", "202609"), ("V1", "202609")]),
        "m-rejected": ("REJECTED", 1, ("V1", "202609"), [("V2", "202609"), ("V1", "202609")]),
        "m-header": ("RECEIVED", 0, ("V3", "202609"), [("V3", "202609"), ("V3", "202609")]),
        "m-elsewhere": ("RECEIVED", 0, ("V3", "202609"), [("V4", "202609")]),
    }
    with engine.begin() as conn:
        for rid, (status, rank, (ou, pe), places) in sent.items():
            conn.execute(sa.text(
                "INSERT INTO submission.return (id, data_set, org_unit, period, submitted_by, received_at, "
                "on_time, status, status_rank, content_type, body_sha256, body, data_values, value_count) "
                "VALUES (:id, 'DS', :ou, :pe, 'u', now(), true, :status, :rank, 'text/csv', 'x', '', "
                "CAST(:v AS json), 1)"), {"id": rid, "ou": ou, "pe": pe, "status": status, "rank": rank,
                                           "v": values(*places)})
    migrations.upgrade(settings, "submission")
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text(
            "SELECT id, CASE WHEN place_org_units IS NULL THEN NULL ELSE "
            "array(SELECT ou || ' ' || pe FROM unnest(place_org_units, place_periods) AS p(ou, pe)) END "
            "FROM submission.return WHERE id LIKE 'm-%'")).all())
    rows = {rid: places and sorted(places) for rid, places in rows.items()}  # (the database's collation)
    assert rows == {"m-received": ["V1 202609", "V1 202610", "V2 202609"],
                    "m-validated": ["V1 202609", "ບ້ານ 202609"],
                    "m-aggregated": None, "m-rejected": None, "m-header": None, "m-elsewhere": ["V4 202609"]}


def test_statnet_migrate_says_what_it_did(settings):
    """An operator's record of an upgrade: from which revision to which (it said "up to
    date" whether it had applied five revisions or none)."""
    migrations.upgrade(settings, "notify")
    migrations.downgrade(settings, "notify", "0006")

    def migrate() -> str:
        done = cli(settings, "migrate", "notify")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    said = migrate()
    head = said.rpartition(" -> ")[2]
    assert said == f"notify: 0006 -> {head}" and head > "0006", said
    assert migrate() == f"notify: up to date at {head}"


def test_statnet_migrate_declares_the_queues_before_a_revision_emits(backend):
    """Aggregation 0016 puts events in its outbox, which the relays of instances still
    running publish at once: migrated by `statnet migrate` on a broker without the queue of
    a consumer the version before lacked (validation's mark_history), they went to notify
    alone, and validation never learnt of the history (a reviewer's finding)."""
    import kombu

    from shared.config import Settings

    vhost, database = backend.new_vhost(), backend.new_database()
    try:
        done = cli(Settings(amqp_uri=backend.amqp_uri(vhost), database_url=database), "migrate", "aggregation")
        assert done.returncode == 0, done.stderr
        with kombu.Connection(backend.amqp_uri(vhost)) as conn:
            # passive: an error if the queue is not there
            conn.default_channel.queue_declare("evt-aggregation-history_loaded--validation.mark_history",
                                               passive=True)
    finally:
        from shared.db import dispose_all

        dispose_all()
        backend.drop_database(database)
        backend.drop_vhost(vhost)
