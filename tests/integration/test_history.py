"""The bulk history path (POST /api/history, statnet history load)."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time

import pytest

from services.aggregation import facts, history
from services.aggregation.history import COLUMNS
from shared.values import ValueTypeError, normalise
from tests.support.builders import tree
from tests.support.client import wait_until

UID = "HIS"


def csv_text(rows) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for de, pe, ou, coc, value in rows:
        w.writerow([de, pe, ou, coc, "", value, "history", "", "", ""])
    return out.getvalue()


def load(system, body: str, ds=f"MDS{UID}", token=None):
    return system.post(f"/api/history?dataSet={ds}", data=body.encode("utf-8"),
                       headers={"Content-Type": "text/csv"}, token=token)


def years_rebuilt(system) -> None:
    """Yearly totals of a history load are rebuilt in the background, then the statistics
    refreshed; wait for both, as ``statnet history load`` does."""
    def over():
        status = system.get("/api/history").json()
        return status["pendingYearTotals"] == 0 and not status["refreshingStatistics"]
    wait_until(over, timeout=60, message="yearly totals rebuilt and statistics refreshed")


@pytest.fixture(scope="module")
def world(system):
    t, units = tree(UID, districts=2, villages=2)
    elements = [
        {"code": f"P{UID}", "name": "People", "nameLo": "ຄົນ", "valueType": "INTEGER", "aggregationType": "SUM",
         "disaggregation": ["M", "F"]},
        {"code": f"R{UID}", "name": "Rate", "valueType": "PERCENTAGE", "aggregationType": "AVERAGE"},
        {"code": f"N{UID}", "name": "Number", "valueType": "NUMBER", "aggregationType": "SUM"},
        {"code": f"B{UID}", "name": "Flag", "valueType": "BOOLEAN", "aggregationType": "SUM"},
        {"code": f"Z{UID}", "name": "Zero or more", "valueType": "INTEGER_ZERO_OR_POSITIVE",
         "aggregationType": "SUM"},
        {"code": f"T{UID}", "name": "Text", "valueType": "TEXT", "aggregationType": "NONE"},
    ]
    system.import_metadata({"orgUnits": units, "dataElements": elements, "dataSets": [
        {"code": f"MDS{UID}", "name": "Monthly", "periodType": "Monthly", "orgUnitLevel": 4,
         "dataElements": [e["code"] for e in elements]}]})
    return t


def test_a_chunk_of_history_lands_in_every_total(system, world):
    t = world
    rows, expected = [], 0
    for i, village in enumerate(t.all_villages):
        for month in range(1, 13):
            for coc, v in (("M", 10 * i + month), ("F", 100 + month)):
                rows.append((f"P{UID}", f"2018{month:02d}", village, coc, str(v)))
                expected += v
    r = load(system, csv_text(rows))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == len(rows) and body["importCount"] == {
        "imported": len(rows), "updated": 0, "ignored": 0, "deleted": 0}
    # months and quarters at once; the year once the background rebuild has run
    assert system.analytics(f"P{UID}", t.country, "201801")[(f"P{UID}", t.country, "201801")] == \
        sum(int(v) for de, pe, ou, coc, v in rows if pe == "201801")
    years_rebuilt(system)
    assert system.analytics(f"P{UID}", t.country, "2018") == {(f"P{UID}", t.country, "2018"): expected}
    assert system.analytics(f"P{UID}.F", t.districts[0], "2018Q1")[(f"P{UID}.F", t.districts[0], "2018Q1")] == \
        2 * (101 + 102 + 103)
    # loading the same chunk again changes nothing but counts as updates
    again = load(system, csv_text(rows)).json()
    assert again["importCount"]["updated"] == len(rows)
    years_rebuilt(system)
    assert system.analytics(f"P{UID}", t.country, "2018") == {(f"P{UID}", t.country, "2018"): expected}
    c = system.get(f"/api/completeness?ds=MDS{UID}&ou={t.province}&pe=201803").json()
    assert (c["expected"], c["actual"], c["onTime"]) == (4, 4, 0)


def test_a_bad_chunk_is_refused_whole_with_line_numbers(system, world):
    t = world
    village = t.all_villages[0]
    rows = [(f"P{UID}", "201701", village, "M", "5"),          # fine
            (f"P{UID}", "2017-02", village, "M", "5"),          # malformed period
            ("GHOST", "201701", village, "", "1"),              # unknown element
            (f"P{UID}", "201701", "NOWHERE", "M", "1"),         # unknown unit
            (f"P{UID}", "201701", village, "X", "1"),           # unknown combo
            (f"P{UID}", "201702", village, "F", "many"),        # not an integer
            (f"P{UID}", "201701", village, "M", "6"),           # given again: no problem (the last stands)
            (f"P{UID}", "201701", t.districts[0], "M", "1"),    # district not assigned
            (f"P{UID}", "000001", village, "M", "1"),           # no year 0
            (f"P{UID}", "189912", village, "M", "1")]           # before 1900, as returns
    r = load(system, csv_text(rows))
    assert r.status_code == 400
    conflicts = r.json()["conflicts"]
    by_line = {c["object"].split(":")[0]: c for c in conflicts}
    assert "line 3" in by_line and "2017-02" in by_line["line 3"]["message"]
    assert "GHOST" in by_line["line 4"]["message"]
    assert "NOWHERE" in by_line["line 5"]["message"]
    assert "'X'" in by_line["line 6"]["message"]
    assert by_line["line 7"]["value"] == "many"
    assert "line 8" not in by_line
    assert any("not assigned" in c["message"] for c in conflicts)
    assert "'000001' is before 1900" in by_line["line 10"]["message"]
    assert "'189912' is before 1900" in by_line["line 11"]["message"]
    assert system.analytics(f"P{UID}", village, "201701") == {}


def test_history_never_overwrites_a_return_but_a_return_overwrites_history(system, world):
    t = world
    village = t.all_villages[1]
    r = system.submit({"dataSet": f"MDS{UID}", "period": "201605", "orgUnit": village,
                       "dataValues": [{"dataElement": f"P{UID}", "categoryOptionCombo": "M", "value": "50"}]})
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    loaded = load(system, csv_text([(f"P{UID}", "201605", village, "M", "999"),
                                    (f"P{UID}", "201606", village, "M", "7")])).json()
    assert loaded["importCount"] == {"imported": 1, "updated": 0, "ignored": 1, "deleted": 0}
    assert system.analytics(f"P{UID}.M", village, "201605") == {(f"P{UID}.M", village, "201605"): 50}
    r = system.submit({"dataSet": f"MDS{UID}", "period": "201606", "orgUnit": village,
                       "dataValues": [{"dataElement": f"P{UID}", "categoryOptionCombo": "M", "value": "8"}]})
    sub = system.wait_status(r.json()["id"])
    assert sub["importCount"]["updated"] == 1
    assert system.analytics(f"P{UID}.M", village, "201606") == {(f"P{UID}.M", village, "201606"): 8}


def test_a_chunk_meeting_stored_values_after_new_ones_counts_each_once(system, world):
    """A chunk is tried as a plain insert and upserted when it meets a stored value; here
    the stored one comes last, after the insert has written the new ones."""
    t = world
    village = t.all_villages[3]
    assert load(system, csv_text([(f"N{UID}", "201101", village, "", "1")])).json()["importCount"] == \
        {"imported": 1, "updated": 0, "ignored": 0, "deleted": 0}
    loaded = load(system, csv_text([(f"N{UID}", "201102", village, "", "2"),
                                    (f"N{UID}", "201103", village, "", "3"),
                                    (f"N{UID}", "201101", village, "", "5")])).json()
    assert loaded["importCount"] == {"imported": 2, "updated": 1, "ignored": 0, "deleted": 0}
    years_rebuilt(system)
    assert system.analytics(f"N{UID}", village, "2011Q1") == {(f"N{UID}", village, "2011Q1"): 10}
    assert system.analytics(f"N{UID}", t.country, "2011") == {(f"N{UID}", t.country, "2011"): 10}
    # DHIS2's default combo by its UID, as an export by code may name it
    uid = load(system, csv_text([(f"N{UID}", "201104", village, "HllvX50cXC0", "4")]))
    assert uid.status_code == 200 and uid.json()["importCount"]["imported"] == 1, uid.text
    assert system.analytics(f"N{UID}", village, "201104") == {(f"N{UID}", village, "201104"): 4}


CASES = [("INTEGER", v) for v in ("12", "-3", "+4", "12.0", "1.5", "x", "1e3", " 7 ", "123456789012345",
                                  "1234567890123456", "000000000000000000012", "١٢")] + \
        [("INTEGER_ZERO_OR_POSITIVE", v) for v in ("0", "5", "-1", "-0", "3.00", "9999999999999999")] + \
        [("NUMBER", v) for v in ("1.5", ".5", "-2.", "1e3", "1E-2", "NaN", "1,5", "Infinity", "1e28", "1e400",
                                 "1e1000", "123456789012345.5", "1_000", "0.1234567890123456",
                                 "1.50000000000000000000", "١٢")] + \
        [("PERCENTAGE", v) for v in ("0", "100", "100.0", "100.5", "-1", "55.5", "1e400")] + \
        [("BOOLEAN", v) for v in ("true", "FALSE", "1", "0", "yes")] + \
        [(t, v) for t in ("INTEGER", "NUMBER", "BOOLEAN")  # white space str.strip() takes, and only it
         for v in ("\t12", "12\u00a0", "12\n", "\u300012", "12\x1f", " ", "\u200b12")] + \
        [(t, v) for t in ("NUMBER", "PERCENTAGE") for v in ("0e20", "-0E-30")]
ELEMENT = {"INTEGER": "P", "INTEGER_ZERO_OR_POSITIVE": "Z", "NUMBER": "N", "PERCENTAGE": "R", "BOOLEAN": "B"}


@pytest.mark.parametrize("value_type, raw", CASES)
def test_history_accepts_exactly_what_returns_accept(system, world, value_type, raw):
    t = world
    try:
        normalise(value_type, raw)
        python_ok = True
    except ValueTypeError:
        python_ok = False
    de = f"{ELEMENT[value_type]}{UID}"
    coc = "M" if value_type == "INTEGER" else ""
    r = load(system, csv_text([(de, "201501", t.all_villages[2], coc, raw)]))
    assert (r.status_code == 200) == python_ok, r.text


def test_only_admins_load_history(system, world):
    token = system.create_user(f"op-{UID}", "operator", None)
    r = load(system, csv_text([]), token=token)
    assert r.status_code == 403 and "load history" in r.json()["message"]
    r = system.post("/api/history/done", token=token)
    assert r.status_code == 403 and "load history" in r.json()["message"]
    r = system.post("/api/history/begin", token=token)
    assert r.status_code == 403 and "load history" in r.json()["message"]
    # the state of a load is read by those who read everything; not by a reporter
    assert system.get("/api/history", token=token).status_code == 200
    reporter = system.create_user(f"rep-{UID}", "reporter", world.province)
    assert system.get("/api/history", token=reporter).status_code == 403
    r = load(system, "not,a,header\n")
    assert r.status_code == 400 and "header" in r.json()["message"]


def test_yearly_totals_wait_for_a_pause_or_for_the_loader_to_say_it_is_done(system, world, monkeypatch):
    t = world
    monkeypatch.setattr(facts.YearTotalsRebuilder, "settle_seconds", 3600)  # no pause ends
    # a bulk chunk: more unit-years than a chunk rebuilds in its own transaction
    years = [str(y) for y in range(2001, 2002 + history.REBUILD_AT_ONCE // len(t.all_villages))]
    assert len(years) * len(t.all_villages) > history.REBUILD_AT_ONCE
    rows = [(f"N{UID}", f"{y}{m:02d}", v, "", "2") for v in t.all_villages for y in years for m in (1, 2)]
    assert load(system, csv_text(rows)).status_code == 200
    time.sleep(2 * facts.YearTotalsRebuilder.poll_seconds + 1)  # the rebuilder polled and waited
    assert system.get("/api/history").json()["pendingYearTotals"] >= len(t.all_villages)
    # the yearly rows wait, but not the year's total: summed from the months meanwhile (it
    # was missing, or last load's figure, while its months and quarters were new)
    assert system.analytics(f"N{UID}", t.country, "2001") == {(f"N{UID}", t.country, "2001"): 4 * len(t.all_villages)}
    r = system.post("/api/history/done")
    assert r.status_code == 200, r.text
    years_rebuilt(system)
    assert system.analytics(f"N{UID}", t.country, "2001") == {(f"N{UID}", t.country, "2001"): 4 * len(t.all_villages)}


def test_a_year_waiting_for_its_rebuild_answers_as_the_rebuild_will(system, world, monkeypatch):
    """Through a load, every aggregation type's year of a pending unit-year is summed from its
    months and quarters: the same answer, at every level, as after the rebuild."""
    t = world
    monkeypatch.setattr(facts.YearTotalsRebuilder, "settle_seconds", 3600)  # no pause ends
    extra = [{"code": f"L{UID}", "name": "Stock", "valueType": "INTEGER", "aggregationType": "LAST",
              "disaggregation": ["M", "F"]},
             {"code": f"A{UID}", "name": "Staff", "valueType": "INTEGER", "aggregationType": "AVERAGE_SUM_ORG_UNIT",
              "disaggregation": ["M", "F"]},
             {"code": f"V{UID}", "name": "Mean", "valueType": "NUMBER", "aggregationType": "AVERAGE"}]
    system.import_metadata({"dataElements": extra, "dataSets": [
        {"code": f"XDS{UID}", "name": "Extra", "periodType": "Monthly", "orgUnitLevel": 4,
         "dataElements": [e["code"] for e in extra]}]})
    rows = []
    years = range(2004, 2005 + history.REBUILD_AT_ONCE // len(t.all_villages))  # a bulk chunk: queued
    for i, v in enumerate(t.all_villages):
        for y, m in ((y, m) for y in years for m in range(1, 13)):
            if (i + m) % 5 == 0:
                continue  # some months missing, some combos alone
            rows += [(f"L{UID}", f"{y}{m:02d}", v, "M", str(10 * i + m)), (f"A{UID}", f"{y}{m:02d}", v, "F", str(i + m))]
            if m % 3:
                rows += [(f"L{UID}", f"{y}{m:02d}", v, "F", str(7 * m)), (f"A{UID}", f"{y}{m:02d}", v, "M", str(2 * m))]
            rows.append((f"V{UID}", f"{y}{m:02d}", v, "", f"{i}.{m}"))
    assert load(system, csv_text(rows), ds=f"XDS{UID}").status_code == 200
    assert system.get("/api/history").json()["pendingYearTotals"] > 0
    units = [t.country, *t.districts, *t.all_villages]
    dx = ";".join(f"{e}{UID}{c}" for e in "LAV" for c in ("", ".M", ".F") if not (e == "V" and c))

    def answers():
        r = system.get(f"/api/analytics?dx={dx}&ou={';'.join(units)}&pe=2004;2004Q2")
        assert r.status_code == 200, r.text
        return sorted((x["dx"], x["ou"], x["pe"], x["value"]) for x in r.json()["rows"])

    live = answers()
    assert system.post("/api/history/done").status_code == 200
    years_rebuilt(system)
    assert live == answers() and len(live) > 30


def test_a_small_load_has_its_years_at_once(system, world, monkeypatch):
    """A few unit-years (a village's year, a correction) are rebuilt with the chunk, as a
    return's are: the year was missing until the rebuilder's pause ended (six seconds)."""
    t = world
    monkeypatch.setattr(facts.YearTotalsRebuilder, "settle_seconds", 3600)  # no pause ends
    rows = [(f"N{UID}", f"2000{m:02d}", t.all_villages[0], "", str(m)) for m in range(1, 13)]
    assert load(system, csv_text(rows)).status_code == 200
    assert system.analytics(f"N{UID}", t.all_villages[0], "2000") == {(f"N{UID}", t.all_villages[0], "2000"): 78}
    assert system.get("/api/history").json()["pendingYearTotals"] == 0


def test_statnet_history_load_sends_a_big_file_in_chunks(system, world, settings, monkeypatch, tmp_path):
    t = world
    from services import history_cli

    monkeypatch.setattr(history_cli, "CHUNK_BYTES", 2000)  # force several chunks on a small file
    rows = [(f"N{UID}", f"2014{m:02d}", v, "", f"{m}.5") for v in t.all_villages for m in range(1, 13)]
    path = os.path.join(tmp_path, "history.csv")
    with open(path, "w", encoding="utf-8") as f:
        f.write(csv_text(rows))
    code = history_cli.load(f"http://{settings.http_address}", settings.admin_token, path, f"MDS{UID}")
    assert code == 0  # it returns once the yearly totals are rebuilt too
    assert system.analytics(f"N{UID}", t.country, "2014") == \
        {(f"N{UID}", t.country, "2014"): pytest.approx(sum(m + 0.5 for m in range(1, 13)) * 4)}
    # the command line, end to end, with a bad file: the line number is the file's
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"N{UID},2013-01,{t.all_villages[0]},,,1,,,,\n")
    env = {**os.environ, "STATNET_HTTP": settings.http_address, "STATNET_ADMIN_TOKEN": settings.admin_token}
    done = subprocess.run([sys.executable, "-m", "services.cli", "history", "load", path, "--data-set",
                           f"MDS{UID}"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"line {len(rows) + 2}" in done.stderr and "2013-01" in done.stderr


def test_the_planner_learns_of_a_load_once_it_is_taken_in(system, world, settings):
    """After a load's yearly totals are rebuilt, the tables' statistics are refreshed and
    the emptied pending queue and the yearly rows are vacuumed (the benchmark's server runs
    without autovacuum: polling a queue of 425,000 deleted keys took 34 ms)."""
    import sqlalchemy as sa

    from shared.db import engine_for

    def one(sql: str, **params):
        with engine_for(settings.database_url).connect() as conn:
            return conn.execute(sa.text(sql), params).one()

    def maintained_at(column: str, table: str):
        return one(f"SELECT {column} FROM pg_stat_user_tables WHERE schemaname = 'aggregation' AND relname = :t",
                   t=table)[0]

    t = world
    started = one("SELECT now()")[0]
    # a bulk load (more unit-years than a chunk rebuilds itself): the rebuilder's, then the refresh
    years = range(2006, 2007 + history.REBUILD_AT_ONCE // len(t.all_villages))  # (Z's own years: to 2012)
    rows = [(f"Z{UID}", f"{y}{m:02d}", v, "", str(m)) for v in t.all_villages for y in years for m in range(1, 13)]
    assert load(system, csv_text(rows)).status_code == 200
    years_rebuilt(system)
    # over means done already, not "some time later": a year's total comes from the
    # subtree index
    with engine_for(settings.database_url).connect() as conn:
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))  # a handful of rows: it would read the heap
        [[plan]] = conn.execute(sa.text(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT sum(s) FROM aggregation.year_total "
            "WHERE data_element = :de AND year = 2006 AND combo = '*' AND path >= ''"), {"de": f"Z{UID}"}).one()
    scan = plan["Plan"]["Plans"][0]
    index_scan = scan if "Index Name" in scan else scan["Plans"][0]
    assert (index_scan["Index Name"], scan["Actual Rows"]) == ("year_total_subtree", len(t.all_villages))
    # the statistics views report the same (they lag the work itself a little)
    wait_until(lambda: (maintained_at("last_analyze", "data_value") or started) > started, timeout=30,
               message="data_value analysed")
    # and the emptied queue of pending keys vacuumed, so polling it stays cheap: truncated
    # to nothing (which VACUUM gives up on while any transaction holds a lock on the table)
    assert maintained_at("last_vacuum", "year_total_pending") > started
    assert one("SELECT pg_relation_size('aggregation.year_total_pending')")[0] == 0
    assert maintained_at("last_vacuum", "year_total") > started
    assert maintained_at("last_analyze", "year_total") > started


def test_a_place_history_brought_is_reported_and_never_chased_as_late(system, world, settings):
    """Completeness counted history's months as reported, yet the deadline check, which
    reads notify's own record of what was received, alerted them late all the same."""
    import sqlalchemy as sa

    from shared.db import engine_for

    t = world
    ds = f"LDS{UID}"
    system.import_metadata({
        "dataSets": [{"code": ds, "name": "Late check", "periodType": "Monthly", "orgUnitLevel": 4,
                      "dataElements": [f"Z{UID}"], "timelyDays": 5}],
        "focalPoints": [{"code": f"SUP{UID}", "name": "Supervisor", "orgUnit": t.province, "role": "supervisor",
                         "email": "sup.his@example.la", "language": "en"}]})
    loaded, missing = t.all_villages[0], t.all_villages[1:]
    r = load(system, csv_text([(f"Z{UID}", "201903", loaded, "default", "7")]), ds=ds)
    assert r.status_code == 200, r.text
    batch = r.json()["batch"]
    with engine_for(settings.database_url).connect() as conn:
        wait_until(lambda: conn.execute(sa.text("SELECT count(*) FROM notify.received WHERE return_id = :b"),
                                        {"b": batch}).scalar() == 1, message="notify told of the loaded month")
    c = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe=201903").json()
    assert (c["expected"], c["actual"]) == (len(t.all_villages), 1)
    assert system.post("/api/deadlines/check?asOf=2019-04-20").status_code == 200
    late = {(n["orgUnit"], n["period"]) for n in system.get(
        f"/api/notifications?recipient=SUP{UID}&type=LATE_RETURN").json()["notifications"]
        if n["dataSet"] == ds}
    assert (loaded, "201903") not in late and {(v, "201903") for v in missing} <= late, late


def test_history_keeps_each_values_comment_and_sender(system, world):
    """A closed period can only be copied to a new server through history: its comments
    and senders were dropped there."""
    from shared.auth import BOOTSTRAP_ADMIN

    t = world
    v1, v2 = t.all_villages[:2]
    body = csv_text([]) + (f"Z{UID},201702,{v1},default,,4,ນາງ ບົວ,,ຂໍ້ມູນເກົ່າ,\n"
                           f"Z{UID},201702,{v2},default,,5,,,,\n"
                           f'Z{UID},201703,{v1},default,,6,,,"line one\rline two",\n')  # a Windows break
    r = load(system, body)
    assert r.status_code == 200, r.text
    values = system.get(f"/api/dataValueSets?dataSet=MDS{UID}&period=201702&orgUnit={t.province}&children=true"
                        ).json()["dataValues"]
    assert [(v["orgUnit"], v["value"], v["storedBy"], v["comment"]) for v in values] == [
        (v1, "4", "ນາງ ບົວ", "ຂໍ້ມູນເກົ່າ"), (v2, "5", BOOTSTRAP_ADMIN, None)]
    march = system.get(f"/api/dataValueSets?dataSet=MDS{UID}&period=201703&orgUnit={v1}").json()["dataValues"]
    assert [v["comment"] for v in march] == ["line one\rline two"]


def test_history_keeps_each_values_followup_mark(system, world):
    """DHIS2's followup column, the mark of a value to check again: read and dropped, and
    exported as false, so years brought over from DHIS2 lost their marks."""
    t = world
    v1, v2 = t.all_villages[:2]
    body = csv_text([]) + (f"Z{UID},201708,{v1},default,,4,,,,true\n"
                           f"Z{UID},201708,{v2},default,,5,,,, FALSE \n")
    assert load(system, body).status_code == 200
    values = system.get(f"/api/dataValueSets?dataSet=MDS{UID}&period=201708&orgUnit={t.province}&children=true"
                        ).json()["dataValues"]
    assert [(v["orgUnit"], v["followup"]) for v in values] == [(v1, True), (v2, False)]
    r = load(system, csv_text([]) + f"Z{UID},201709,{v1},default,,4,,,,perhaps\n")
    assert r.status_code == 400 and r.json()["conflicts"][0]["object"] == "line 2: followup", r.text
    assert system.analytics(f"Z{UID}", v1, "201709") == {}


def test_history_refuses_a_partners_values_and_import_options_it_would_ignore(system, world):
    t = world
    v1 = t.all_villages[0]
    body = csv_text([]) + f"Z{UID},201705,{v1},default,PARTNER_Z,10,,,,\n"
    r = load(system, body)
    assert r.status_code == 400 and "PARTNER_Z" in r.text, r.text
    for params in ("importStrategy=DELETE", "strategy=DELETE", "idScheme=UID"):
        r = system.post(f"/api/history?dataSet=MDS{UID}&{params}",
                        data=(csv_text([]) + f"Z{UID},201705,{v1},default,,10,,,,\n").encode(),
                        headers={"Content-Type": "text/csv"})
        assert r.status_code == 400 and params.split("=")[0] in r.json()["message"], r.text
    assert system.analytics(f"Z{UID}", v1, "201705") == {}


def test_a_later_line_wins_in_a_chunk_across_chunks_and_across_loads(system, world):
    """A key given twice in a chunk was refused, and across two chunks the one committed
    last won (the loader sends two at a time): now the file's order decides, and a load
    started later wins over an earlier one."""
    t = world
    v = t.all_villages[2]
    key = (f"N{UID}", "200801", v, "")
    r = load(system, csv_text([key + ("1",), (f"N{UID}", "200802", v, "", "2"), key + ("3",)]))
    assert r.status_code == 200, r.text
    assert r.json()["importCount"] == {"imported": 2, "updated": 0, "ignored": 1, "deleted": 0}
    assert system.analytics(f"N{UID}", v, "200801") == {(f"N{UID}", v, "200801"): 3}

    def chunk(value, first_line, started):
        return system.post(f"/api/history?dataSet=MDS{UID}&firstLine={first_line}&loadStarted={started}",
                           data=csv_text([other + (value,)]).encode(), headers={"Content-Type": "text/csv"})
    other = (f"N{UID}", "200803", v, "")
    # one load, its second chunk committed first: the first chunk's line comes earlier in the file
    assert chunk("20", 9000, "2026-11-01T00:00:00Z").status_code == 200
    assert chunk("10", 2, "2026-11-01T00:00:00Z").json()["importCount"]["ignored"] == 1
    assert system.analytics(f"N{UID}", v, "200803") == {(f"N{UID}", v, "200803"): 20}
    # a load started later wins at any line; one started earlier loses at any line
    assert chunk("30", 2, "2026-11-01T08:00:00%2B07:00").json()["importCount"]["updated"] == 1
    assert chunk("40", 99999, "2026-10-31T00:00:00Z").json()["importCount"]["ignored"] == 1
    assert system.analytics(f"N{UID}", v, "200803") == {(f"N{UID}", v, "200803"): 30}
    # a chunk sent on its own is ordered by the time it comes: after every load before it
    assert load(system, csv_text([other + ("50",)])).json()["importCount"]["updated"] == 1
    assert system.analytics(f"N{UID}", v, "200803") == {(f"N{UID}", v, "200803"): 50}
    assert chunk("60", 99999, "2026-11-27T00:00:00Z").json()["importCount"]["ignored"] == 1
    for params, name in (("firstLine=1", "firstLine"), ("firstLine=x", "firstLine"), ("firstLine=²", "firstLine"),
                         ("loadStarted=yesterday", "loadStarted"), ("loadStarted=2026-11-01T00:00:00", "loadStarted"),
                         ("loadStarted=2999-01-01T00:00:00Z", "loadStarted")):
        r = system.post(f"/api/history?dataSet=MDS{UID}&{params}", data=csv_text([key + ("70",)]).encode(),
                        headers={"Content-Type": "text/csv"})
        assert r.status_code == 400 and name in r.json()["message"], (params, r.text)
    assert system.analytics(f"N{UID}", v, "200801") == {(f"N{UID}", v, "200801"): 3}


def test_the_load_begun_later_wins_even_within_one_second(system, world):
    """Loads were ordered by the second they began in, and within a second by their lines:
    a one-line correction posted right after a chunk (a script) lost to it, 3 times in 3."""
    v = world.all_villages[3]
    key = (f"N{UID}", "200901", v, "")
    for attempt in range(5):   # each pair well inside one second
        first = load(system, csv_text([key + (str(10 + attempt),), (f"N{UID}", "200902", v, "", "1")]))
        second = load(system, csv_text([key + (str(20 + attempt),)]))
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        assert second.json()["load"] > first.json()["load"]
        assert system.analytics(f"N{UID}", v, "200901") == {(f"N{UID}", v, "200901"): 20 + attempt}

    # a load of several chunks: its number, from POST /api/history/begin, on each chunk
    def chunk(value, first_line, number):
        return system.post(f"/api/history?dataSet=MDS{UID}&firstLine={first_line}&load={number}",
                           data=csv_text([key + (value,)]).encode(), headers={"Content-Type": "text/csv"})
    earlier, later = (system.post("/api/history/begin").json()["load"] for _ in range(2))
    assert later > earlier
    assert chunk("31", 2, later).status_code == 200
    assert chunk("30", 99999, earlier).json()["importCount"]["ignored"] == 1  # begun earlier: loses
    assert chunk("32", 3, later).json()["importCount"]["updated"] == 1        # its own later line
    assert system.analytics(f"N{UID}", v, "200901") == {(f"N{UID}", v, "200901"): 32}
    for params, name in ((f"load={later + 1000}", "not begun"), ("load=0", "load"), ("load=x", "load"),
                         (f"load={later}&loadStarted=2026-11-01T00:00:00Z", "give one")):
        r = system.post(f"/api/history?dataSet=MDS{UID}&{params}", data=csv_text([key + ("70",)]).encode(),
                        headers={"Content-Type": "text/csv"})
        assert r.status_code == 400 and name in r.json()["message"], (params, r.text)
    assert system.analytics(f"N{UID}", v, "200901") == {(f"N{UID}", v, "200901"): 32}

    # an older loader's start a few minutes ahead of this clock: a correction begun after it
    # is numbered after it (it lost to it for those minutes, silently "ignored")
    import datetime as dt

    ahead = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = system.post(f"/api/history?dataSet=MDS{UID}&loadStarted={ahead}", data=csv_text([key + ("555",)]).encode(),
                    headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    correction = load(system, csv_text([key + ("666",)]))
    assert correction.json()["load"] > r.json()["load"] and correction.json()["importCount"]["updated"] == 1
    assert system.analytics(f"N{UID}", v, "200901") == {(f"N{UID}", v, "200901"): 666}


def test_an_empty_value_or_a_deleted_line_deletes_loaded_history_never_a_returns(system, world):
    """A value loaded by mistake could not be taken out: an empty value, or DHIS2's
    deleted column, was "ignored"."""
    t = world
    v, w = t.all_villages[0], t.all_villages[1]
    ds = f"MDS{UID}"
    rows = [(f"N{UID}", f"2021{m:02d}", x, "", str(m)) for x in (v, w) for m in (1, 2, 3)]
    assert load(system, csv_text(rows)).status_code == 200
    r = system.submit({"dataSet": ds, "period": "202103", "orgUnit": w,
                       "dataValues": [{"dataElement": f"N{UID}", "value": "33"}]})
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    body = "\n".join([",".join(COLUMNS) + ",deleted",
                      f"N{UID},202101,{v},,,1,,,,,true",      # deleted: true
                      f"N{UID},202102,{v},,,,,,,",            # an empty value
                      f"N{UID},202103,{v},,,\u00a0,,,,",      # only white space
                      f"N{UID},202103,{w},,,,,,,",            # a return's value: untouched
                      f"N{UID},202104,{w},,,,,,,"]) + "\n"     # nothing there: nothing to delete
    r = load(system, body)
    assert r.status_code == 200, r.text
    assert r.json()["importCount"] == {"imported": 0, "updated": 0, "ignored": 2, "deleted": 3}
    assert system.analytics(f"N{UID}", v, "2021Q1") == {}
    assert system.analytics(f"N{UID}", w, "2021Q1") == {(f"N{UID}", w, "2021Q1"): 1 + 2 + 33}
    assert system.analytics(f"N{UID}", t.country, "2021") == {(f"N{UID}", t.country, "2021"): 36}  # rebuilt
    # v reported nothing of those months any more; w did
    c = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe=202101").json()
    assert c["actual"] == 1, c
    exported = system.get(f"/api/dataValueSets?dataSet={ds}&period=202101&orgUnit={v}").json()["dataValues"]
    assert exported == []
    # an earlier line of the same load, committed after the deletion, can't bring it back
    deleting = csv_text([]) + f"N{UID},202105,{v},,,,,,,\n"
    for first_line, text in ((5000, deleting), (2, csv_text([(f"N{UID}", "202105", v, "", "9")]))):
        r = system.post(f"/api/history?dataSet={ds}&firstLine={first_line}&loadStarted=2026-11-02T00:00:00Z",
                        data=text.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
    assert system.analytics(f"N{UID}", v, "202105") == {}
    c = system.get(f"/api/completeness?ds={ds}&ou={v}&pe=202105").json()
    assert c["actual"] == 0, c  # the value lost to the deletion: nothing reported (it was counted)
    # and a value loaded again after its deletion is imported anew
    again = load(system, csv_text([(f"N{UID}", "202101", v, "", "7")])).json()
    assert again["importCount"] == {"imported": 1, "updated": 0, "ignored": 0, "deleted": 0}
    assert system.analytics(f"N{UID}", v, "202101") == {(f"N{UID}", v, "202101"): 7}


def test_a_return_after_history_is_on_time_as_it_was_sent(system, world):
    """History's places have no receipt time; a return on time that came after them was
    counted late (a null receipt time was never replaced)."""
    from shared.periods import Period, today

    t = world
    v = t.all_villages[3]
    month = Period.containing("Monthly", today()).code
    assert load(system, csv_text([(f"Z{UID}", month, v, "", "1")])).status_code == 200
    c = system.get(f"/api/completeness?ds=MDS{UID}&ou={v}&pe={month}").json()
    assert (c["actual"], c["onTime"]) == (1, 0)
    r = system.submit({"dataSet": f"MDS{UID}", "period": month, "orgUnit": v,
                       "dataValues": [{"dataElement": f"Z{UID}", "value": "2"}]})
    sub = system.wait_status(r.json()["id"])
    assert sub["status"] == "AGGREGATED" and sub["onTime"], sub
    c = system.get(f"/api/completeness?ds=MDS{UID}&ou={v}&pe={month}").json()
    assert (c["actual"], c["onTime"]) == (1, 1)


def _marked_for_validation(settings, village: str) -> None:
    """History's places reach validation by an event after the chunk's answer: wait for it
    (a return judged before is judged as if the load were still to come)."""
    import sqlalchemy as sa

    from shared.db import engine_for

    with engine_for(settings.database_url).connect() as conn:
        wait_until(lambda: conn.execute(sa.text("SELECT count(*) FROM validation.history_place "
                                                "WHERE org_unit = :v"), {"v": village}).scalar(),
                   timeout=20, message=f"history of {village} marked for validation")


@pytest.fixture(scope="module")
def kids(system, world):
    """An element whose two combos a HIGH rule compares (boys never more than girls here)."""
    system.import_metadata({
        "dataElements": [{"code": f"K{UID}", "name": "Kids", "valueType": "INTEGER", "aggregationType": "SUM",
                          "disaggregation": ["M", "F"]}],
        "dataSets": [{"code": f"MDS{UID}", "name": "Monthly", "periodType": "Monthly", "orgUnitLevel": 4,
                      "dataElements": [f"P{UID}", f"R{UID}", f"N{UID}", f"B{UID}", f"Z{UID}", f"T{UID}",
                                       f"K{UID}"]}],
        "validationRules": [{"code": f"KMF{UID}", "name": "Boys at most girls", "importance": "HIGH",
                             "left": f"#{{K{UID}.M}}", "operator": "less_than_or_equal_to",
                             "right": f"#{{K{UID}.F}}", "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING",
                             "dataSet": f"MDS{UID}"}]})
    return f"K{UID}"


def test_a_return_after_history_is_judged_with_the_loaded_values(system, world, settings, kids):
    """A rule across values reads what history loaded at the place: girls 98 loaded, then
    boys 500 sent, is rejected as it is when both came in returns (it was accepted:
    validation held only what it had accepted itself). The dry run says so first."""
    v = world.all_villages[0]
    assert load(system, csv_text([(kids, "201203", v, "F", "98")])).status_code == 200
    _marked_for_validation(settings, v)
    sent = {"dataSet": f"MDS{UID}", "period": "201203", "orgUnit": v,
            "dataValues": [{"dataElement": kids, "categoryOptionCombo": "M", "value": "500"}]}
    dry = system.post("/api/dataValueSets?dryRun=true", json=sent)
    assert dry.status_code == 200 and dry.json()["status"] == "REJECTED", dry.text
    sub = system.wait_status(system.submit(sent).json()["id"])
    assert sub["status"] == "REJECTED", sub
    assert [x["rule"] for x in sub["violations"]] == [f"KMF{UID}"], sub
    # a return's own value is never replaced by history validation takes in later
    ok = system.wait_status(system.submit({**sent, "dataValues": [
        {"dataElement": kids, "categoryOptionCombo": "M", "value": "90"}]}).json()["id"])
    assert ok["status"] == "AGGREGATED", ok
    assert load(system, csv_text([(kids, "201203", v, "M", "1000")])).status_code == 200
    _marked_for_validation(settings, v)
    later = system.wait_status(system.submit({**sent, "dataValues": [
        {"dataElement": kids, "categoryOptionCombo": "F", "value": "95"}]}).json()["id"])
    assert later["status"] == "AGGREGATED", later  # boys 90 (the return's), not 1000 (history's)


def test_a_value_history_deletes_is_gone_for_validation_too(system, world, settings, kids):
    """Blanked by a later load after validation had taken it in, a loaded value kept
    deciding: girls 98 deleted, boys 500 was still rejected by "boys <= girls" (the
    deleting chunk's places were not told to validation)."""
    v = world.all_villages[2]
    assert load(system, csv_text([(kids, "201205", v, "F", "98")])).status_code == 200
    _marked_for_validation(settings, v)
    taken = system.wait_status(system.submit({"dataSet": f"MDS{UID}", "period": "201204", "orgUnit": v, "dataValues": [
        {"dataElement": kids, "categoryOptionCombo": "M", "value": "1"}]}).json()["id"])
    assert taken["status"] == "AGGREGATED", taken  # the village's history is validation's now
    blank = load(system, csv_text([(kids, "201205", v, "F", "")]))
    assert blank.json()["importCount"]["deleted"] == 1, blank.text
    _marked_for_validation(settings, v)
    sent = {"dataSet": f"MDS{UID}", "period": "201205", "orgUnit": v,
            "dataValues": [{"dataElement": kids, "categoryOptionCombo": "M", "value": "500"}]}
    dry = system.post("/api/dataValueSets?dryRun=true", json=sent)
    assert dry.json()["status"] != "REJECTED", dry.text
    sub = system.wait_status(system.submit(sent).json()["id"])
    assert sub["status"] == "AGGREGATED" and sub["violations"] == [], sub  # no girls: the rule is skipped


def test_outliers_are_judged_against_the_loaded_past(system, world, settings, kids):
    """Eleven loaded months of about 100 make a month of 5,000 an outlier: the past a
    province loads is the past outliers are judged against (validation saw none of it, and
    judged no outlier until it had accepted four months of returns itself)."""
    v = world.all_villages[1]
    past = [(kids, f"2012{m:02d}", v, "M", str(100 + m)) for m in range(1, 12)]
    assert load(system, csv_text(past)).status_code == 200
    _marked_for_validation(settings, v)
    sub = system.wait_status(system.submit({"dataSet": f"MDS{UID}", "period": "201212", "orgUnit": v, "dataValues": [
        {"dataElement": kids, "categoryOptionCombo": "M", "value": "5000"}]}).json()["id"])
    assert sub["status"] == "AGGREGATED", sub
    assert [(o["dataElement"], o["categoryOptionCombo"]) for o in sub["outliers"]] == [(kids, "M")], sub


def test_history_loaded_before_validation_and_notify_heard_of_loads_is_announced_at_the_upgrade(
        system, world, settings, kids):
    """An upgrade probe: history a version before the history_loaded event (or before
    validation marked its places) had loaded stayed unknown to both; a return the loaded
    values make break a HIGH rule was accepted, and the deadline check chased the loaded
    months. Aggregation 0016 announces every load again from what it holds."""
    import sqlalchemy as sa

    from shared import migrations
    from shared.db import engine_for

    v = world.all_villages[3]
    r = load(system, csv_text([(kids, "200506", v, "F", "98")]))
    assert r.status_code == 200, r.text
    batch = r.json()["batch"]
    _marked_for_validation(settings, v)
    engine = engine_for(settings.database_url)

    def received() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM notify.received WHERE return_id = :b"),
                                {"b": batch}).scalar()
    wait_until(lambda: received() == 1, message="notify told of the load")
    # as a version before them left it: neither validation nor notify knows of the load
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM validation.history_place WHERE org_unit = :v"), {"v": v})
        conn.execute(sa.text("DELETE FROM validation.history_series WHERE org_unit = :v"), {"v": v})
        conn.execute(sa.text("DELETE FROM notify.received WHERE return_id = :b"), {"b": batch})

    migrations.downgrade(settings, "aggregation", "0015")
    migrations.upgrade(settings, "aggregation")  # 0016, with aggregation running: its relay sends
    _marked_for_validation(settings, v)
    wait_until(lambda: received() == 1, message="notify told of the load again")
    sub = system.wait_status(system.submit({"dataSet": f"MDS{UID}", "period": "200506", "orgUnit": v, "dataValues": [
        {"dataElement": kids, "categoryOptionCombo": "M", "value": "500"}]}).json()["id"])
    assert sub["status"] == "REJECTED", sub  # boys 500 > girls 98, as history loaded them


def test_statnet_history_load_says_exactly_which_lines_are_in_after_a_refusal(system, world, settings,
                                                                              monkeypatch, tmp_path, capsys):
    """The chunk sent beside a refused one, and every chunk after it, went on loading while
    the loader said "the chunk beside it may have been loaded too"; records with line
    breaks were cut between chunks."""
    import re

    from services import history_cli

    t = world
    monkeypatch.setattr(history_cli, "CHUNK_BYTES", 700)
    rows = [[f"N{UID}", f"2022{m:02d}", v, "", "", str(m), "", "", f"ບັນທຶກ {m}\r\nວ່າ \"ດີ\"", ""]
            for v in t.all_villages for m in range(1, 13)]
    rows[3][5] = "many"  # a bad value in the first chunk
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([list(COLUMNS)] + rows)
    path = os.path.join(tmp_path, "history.csv")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(out.getvalue())
    assert len(list(history_cli.chunks(path))) >= 4
    code = history_cli.load(f"http://{settings.http_address}", settings.admin_token, path, f"MDS{UID}")
    err = capsys.readouterr().err
    assert code == 1
    # two file lines a record: the bad one is the fourth record, lines 8-9 (the line its
    # record ends on, as the server's CSV reader counts it)
    assert "line 9" in err and "'many'" in err, err
    kept = re.search(r"lines ([\d,\- and]+) \(([\d,]+) rows\) were loaded and stay", err)
    loaded = set()
    if kept:
        for a, b in re.findall(r"([\d,]+)-([\d,]+)", kept.group(1)):
            loaded |= {(int(a.replace(",", "")) + i) // 2 - 1 for i in range(0, int(b.replace(",", "")) -
                                                                             int(a.replace(",", "")), 2)}
    else:
        assert "nothing of the file was loaded" in err, err
    years_rebuilt(system)
    expected = sum(int(rows[i][5]) for i in loaded)
    got = system.analytics(f"N{UID}", t.country, "2022")
    assert got == ({(f"N{UID}", t.country, "2022"): expected} if loaded else {}), (err, loaded)
    assert not loaded or max(loaded) < 24, err  # at most the chunk sent beside the refused one
    # fixed, the same file loads whole, each value once, comments with their line breaks
    rows[3][5] = "4"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([list(COLUMNS)] + rows)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(out.getvalue())
    assert history_cli.load(f"http://{settings.http_address}", settings.admin_token, path, f"MDS{UID}") == 0
    assert system.analytics(f"N{UID}", t.country, "2022") == {(f"N{UID}", t.country, "2022"): 4 * 78}
    [value] = system.get(f"/api/dataValueSets?dataSet=MDS{UID}&period=202203&orgUnit={t.all_villages[0]}"
                         ).json()["dataValues"]
    assert value["comment"] == "ບັນທຶກ 3\r\nວ່າ \"ດີ\""


def test_a_chunk_read_by_a_snapshot_from_before_a_move_lands_under_the_new_parent(system, world, settings):
    """An instance's snapshot counts as current for a moment without asking the database
    (another instance applied the move). A chunk must not take its paths from it: written
    after the move's re-path, the village's months would stay in the old district for
    good. The chunk looks its paths up in SQL, after the lock a move's re-path waits for."""
    import time
    import types

    from services.aggregation import tables as aggregation_tables
    from shared import replica
    from shared.db import engine_for

    t = world
    old_district, new_district = t.districts
    village = f"VSTALE{UID}"
    system.import_metadata({"orgUnits": [{"code": village, "name": "Stale village", "nameLo": "ບ້ານເກົ່າ",
                                          "parent": old_district, "openingDate": "2000-01-01"}]})
    cache = replica._caches[(settings.database_url, aggregation_tables.replica.state.schema)]
    access = replica.ReplicaAccess(types.SimpleNamespace(engine=engine_for(settings.database_url),
                                                         tables=aggregation_tables.replica, cache=cache))
    access.invalidate()
    before_move = access.current()
    assert before_move.org_units[village].paths
    system.import_metadata({"orgUnits": [{"code": village, "parent": new_district, "parentFrom": "2019-01-01"}]})
    cache.snapshot, cache.checked_until = before_move, time.monotonic() + 3600  # as another instance's
    try:
        r = load(system, csv_text([(f"N{UID}", "201903", village, "default", "7")]))
    finally:
        cache.checked_until = 0.0
    assert r.status_code == 200, r.text
    n = f"N{UID}"
    assert system.analytics(n, new_district, "201903") == {(n, new_district, "201903"): 7}
    assert system.analytics(n, old_district, "201903") == {}


def test_a_chunk_that_unreports_places_reads_its_places_once_whatever_the_planner_knows(system, world, settings):
    """A corrected file's chunk with a blank value, or one meeting a return's value, asks
    which of its places history no longer reports. As a join on the places' document, with
    completeness's statistics stale (autovacuum off, or just after a load grew it) the
    planner read the whole document again for every completeness row: minutes for a
    24,000-place chunk, its locks held while every return waited. The document is read
    once, each place looked up by key, whatever join the planner would choose."""
    import json as json_

    import sqlalchemy as sa

    from services.aggregation.history import _UNREPORTED
    from shared.db import engine_for

    t = world
    rows = [(f"P{UID}", f"2006{m:02d}", v, "M", str(m)) for v in t.all_villages for m in range(1, 13)]
    assert load(system, csv_text(rows)).status_code == 200
    places = [{"ou": v, "period": f"2006{m:02d}"} for v in t.all_villages for m in range(1, 13)]
    with engine_for(settings.database_url).connect() as conn, conn.begin() as tx:
        for knob in ("enable_hashjoin", "enable_mergejoin", "enable_material", "enable_indexscan"):
            conn.execute(sa.text(f"SET LOCAL {knob} = off"))  # the plans stale statistics lead to
        [[plan]] = conn.execute(sa.text("EXPLAIN (ANALYZE, FORMAT JSON) " + _UNREPORTED.text), {
            "ds": f"MDS{UID}", "elements": [f"X{UID}"], "places": json_.dumps(places)}).all()
        tx.rollback()

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    scans = [n for n in nodes(plan[0]["Plan"]) if n["Node Type"] == "Function Scan"]
    assert scans and all(n["Actual Loops"] == 1 for n in scans), json_.dumps(plan, indent=1)[:3000]


def test_two_loads_of_the_same_keys_in_opposite_orders_both_load(system, world):
    """Each chunk locks its keys as it inserts them: two loads meeting the same keys in
    opposite orders deadlocked, and one was refused (503). Inserted in the key's order,
    the later waits for the earlier."""
    import threading

    t = world
    keys = [(de, f"{y}{m:02d}", v, coc) for v in t.all_villages for y in range(2000, 2006) for m in range(1, 13)
            for de, coc in ((f"P{UID}", "M"), (f"P{UID}", "F"), (f"N{UID}", ""), (f"R{UID}", ""))]
    bodies = [csv_text([k + ("1",) for k in keys]), csv_text([k + ("2",) for k in reversed(keys)])]
    for attempt in range(5):  # (a deadlock needs the two to meet: not every time)
        answers = []
        threads = [threading.Thread(target=lambda b=b: answers.append(load(system, b))) for b in bodies]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert [r.status_code for r in answers] == [200, 200], [r.text[:300] for r in answers]


def test_two_takes_of_one_place_leave_the_later_loads_value_in_either_order(system, world, settings):
    """Two batches (or a dry run beside a batch) each read a place's history from
    aggregation, one before a correction load and one after; the one that read first
    committing last brought the corrected value back."""
    import json as json_

    import sqlalchemy as sa

    from services.validation.service import _TAKE
    from shared.db import engine_for

    def take(value, seq, periods=("201101",)):
        with engine_for(settings.database_url).begin() as conn:
            conn.execute(_TAKE, {"rows": json_.dumps([{
                "org_unit": "TAKEOU", "data_element": "TAKEDE", "combo": "F", "period_type": "Monthly",
                "periods": list(periods), "figures": [value] * len(periods), "seqs": [seq] * len(periods)}])})
        return series()

    def series():
        with engine_for(settings.database_url).connect() as conn:
            periods, figures, seqs = conn.execute(sa.text(
                "SELECT periods, figures, seqs FROM validation.history_series "
                "WHERE org_unit = 'TAKEOU' AND data_element = 'TAKEDE'")).one()
        return dict(zip(periods, zip(figures, seqs)))["201101"]

    assert tuple(take(980, -5)) == (980, -5)    # the correction's, taken first
    assert tuple(take(98, -10)) == (980, -5)    # the earlier load's, committed after: not over it
    assert tuple(take(990, -3)) == (990, -3)    # a load later still
    assert tuple(take(5, 0)) == (990, -3)       # one from before loads were numbered, read before them
    # other periods of the series merge in beside it, in period order; a deletion is null
    take(None, -4, ("201012", "201102"))
    with engine_for(settings.database_url).connect() as conn:
        assert conn.execute(sa.text(
            "SELECT periods, figures, seqs FROM validation.history_series "
            "WHERE org_unit = 'TAKEOU' AND data_element = 'TAKEDE'")).one() == (
            ["201012", "201101", "201102"], [None, 990, None], [-4, -3, -4])
