"""Registry on the real database and broker: metadata import, hierarchy over time,
users and scopes, and what the registry learns from traffic (CONTRACT 2-3)."""
from __future__ import annotations

import datetime as dt
import gc
import json
import os
import subprocess
import sys
import weakref

import pytest
import sqlalchemy as sa

from shared import replica
from shared.auth import token_hash
from shared.db import engine_for
from shared.periods import today
from tests.support.builders import tree, village_data_set, village_return
from tests.support.client import wait_until


@pytest.fixture(scope="module")
def world(system):
    t, units = tree("REG", districts=2, villages=2)
    codes, doc = village_data_set("REG", period_type="Yearly", rules=False)
    doc["orgUnits"] = units
    doc["focalPoints"] = [
        {"code": "FPREGSUP", "name": "ຜູ້ກວດກາ", "orgUnit": t.province, "role": "supervisor",
         "email": "sup@example.la", "language": "lo"},
        {"code": "FPREGREP", "name": "Village collector", "orgUnit": t.villages[t.districts[0]][0],
         "role": "reporter", "phone": "+856 20 5555 1234", "language": "en"},
    ]
    first = system.import_metadata(doc)
    return t, codes, doc, first


def unit(system, code, token=None):
    r = system.get(f"/api/orgUnits/{code}", token=token)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ metadata import

def test_import_creates_everything_and_reimport_creates_nothing(system, world):
    t, codes, doc, first = world
    n = len(doc["orgUnits"]) + len(doc["dataElements"]) + len(doc["dataSets"]) + len(doc["focalPoints"])
    assert first == {"status": "OK", "stats": {"created": n, "updated": 0, "ignored": 0, "total": n}}
    again = system.import_metadata(doc)
    assert again["stats"] == {"created": 0, "updated": 0, "ignored": n, "total": n}


def test_lao_names_round_trip(system, world):
    t, *_ = world
    district = unit(system, t.districts[0])
    assert district["nameLo"] == "ເມືອງ 1"
    assert district["focalPoints"] == []
    province = unit(system, t.province)
    assert province["focalPoints"][0]["name"] == "ຜູ້ກວດກາ"
    assert province["level"] == 2 and province["parent"] == t.country
    assert set(province["children"]) == set(t.districts)


@pytest.mark.parametrize("bad, expected", [
    ({"orgUnits": [{"code": "NEWREG1", "name": "x", "parent": "NOWHERE", "openingDate": "2000-01-01"}]},
     "unknown parent 'NOWHERE'"),
    ({"dataElements": [{"code": "NEWDE", "name": "x", "valueType": "MONEY", "aggregationType": "SUM"}]},
     "MONEY"),
    ({"dataSets": [{"code": "NEWDS", "name": "x", "periodType": "Weekly", "dataElements": []}]}, "Weekly"),
    ({"validationRules": [{"code": "NEWR", "name": "x", "importance": "HIGH", "left": "#{POPREG.M} +",
                           "operator": "equal_to", "right": "0"}]}, "bad left expression"),
    ({"validationRules": [{"code": "NEWR", "name": "x", "importance": "URGENT", "left": "1",
                           "operator": "equal_to", "right": "1"}]}, "URGENT"),
    ({"orgUnits": [{"code": "DUPREG", "name": "a", "openingDate": "2000-01-01"},
                   {"code": "DUPREG", "name": "b", "openingDate": "2000-01-01"}]}, "duplicate code 'DUPREG'"),
    ({"focalPoints": [{"code": "NEWFP", "name": "x", "orgUnit": "NOWHERE", "role": "supervisor"}]},
     "unknown org unit 'NOWHERE'"),
])
def test_an_invalid_document_is_409_and_changes_nothing(system, world, bad, expected):
    t, *_ = world
    # one valid change rides along: it must not be applied either
    doc = {**bad, "orgUnits": bad.get("orgUnits", []) + [
        {"code": t.province, "name": "Renamed province", "parent": t.country, "openingDate": "2000-01-01"}]}
    r = system.post("/api/metadata", json=doc)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["status"] == "ERROR"
    assert any(expected in e["message"] for e in body["errors"]), body["errors"]
    assert all(set(e) >= {"object", "message"} for e in body["errors"])
    assert unit(system, t.province)["name"] == f"Province {t.uid}"


def test_a_cycle_is_refused(system, world):
    t, *_ = world
    r = system.post("/api/metadata", json={"orgUnits": [{"code": t.province, "parent": t.villages[t.districts[0]][0]}]})
    assert r.status_code == 409
    assert any("cycle in the hierarchy" in e["message"] for e in r.json()["errors"])


def test_a_unit_not_open_yet_is_shown_under_the_parent_it_will_open_under(system, world):
    t, *_ = world
    district = t.districts[0]
    system.import_metadata({"orgUnits": [{"code": "REGFUT", "name": "Opens next year", "parent": district,
                                          "openingDate": "2099-01-01"}]})
    shown = unit(system, "REGFUT")
    assert shown["parent"] == district and shown["path"].endswith(f"/{district}/REGFUT/")
    assert shown["level"] == shown["path"].count("/") - 1
    assert "REGFUT" in unit(system, district)["children"]


def test_a_data_element_change_that_would_strand_stored_values_is_409(system, world):
    """Narrowing a value type, or removing a combo, once values of it are stored: refused
    (as DHIS2 refuses a value type change), nothing changed; a widening goes through."""
    t, codes, doc, _ = world
    village = t.villages[t.districts[1]][1]
    sent = system.submit(village_return(codes, village, "2019", 4, 5, households=3))
    assert system.wait_status(sent.json()["id"])["status"] == "AGGREGATED"
    pop, hh = (dict(de) for de in doc["dataElements"])
    for change, expected in (
            (dict(pop, disaggregation=["M"]), f"category option combo 'F' cannot be removed: values of {pop['code']}.F"),
            (dict(pop, valueType="TEXT"), "valueType cannot change from INTEGER to TEXT: values of it are stored"),
            (dict(hh, valueType="BOOLEAN"), "valueType cannot change from INTEGER_ZERO_OR_POSITIVE to BOOLEAN")):
        r = system.post("/api/metadata", json={"dataElements": [change]})
        assert r.status_code == 409, r.text
        assert any(e["object"] == change["code"] and expected in e["message"] for e in r.json()["errors"]), r.text
    assert system.analytics(f"{codes['pop']}.F", village, "2019") == {(f"{codes['pop']}.F", village, "2019"): 5}
    # a count becoming a measure reads every stored value the same: allowed
    area = {"code": "AREAREG", "name": "Rice area", "valueType": "INTEGER", "aggregationType": "SUM"}
    ds = dict(doc["dataSets"][0], dataElements=doc["dataSets"][0]["dataElements"] + ["AREAREG"])
    system.import_metadata({"dataElements": [area], "dataSets": [ds]})
    sent = system.submit({"dataSet": codes["ds"], "period": "2019", "orgUnit": village,
                          "dataValues": [{"dataElement": "AREAREG", "value": "12"}]})
    assert system.wait_status(sent.json()["id"])["status"] == "AGGREGATED"
    assert system.import_metadata({"dataElements": [dict(area, valueType="NUMBER")]})["stats"]["updated"] == 1
    assert system.analytics("AREAREG", village, "2019") == {("AREAREG", village, "2019"): 12}


def test_a_narrowing_change_waits_for_returns_on_their_way(system, world, settings):
    """A return validated against the metadata before the change, still on its way to the
    aggregates, would bring in what the change is refused for once stored (a probe raced
    them: an INTEGER element holding 2.5, a Quarterly data set holding a month of a combo
    that was gone). So what is in flight counts as stored, until it is judged."""
    import uuid

    t, codes, doc, _ = world
    village = t.villages[t.districts[0]][1]
    element = {"code": "RXREG", "name": "Doses", "valueType": "NUMBER", "aggregationType": "SUM"}
    data_set = {"code": "DSRX", "name": "Doses given", "periodType": "Yearly", "dataElements": ["RXREG"],
                "orgUnitLevel": 4}
    system.import_metadata({"dataElements": [element], "dataSets": [data_set]})
    value = {"data_element": "RXREG", "category_option_combo": "default", "org_unit": village,
             "period": "2019", "value": "2.5", "comment": None}
    return_id = f"in-flight-{uuid.uuid4()}"
    db = engine_for(settings.database_url)
    with db.begin() as conn:  # received as intake stores one; validation has not judged it yet
        conn.execute(sa.text("""
            INSERT INTO submission.return (id, data_set, org_unit, period, submitted_by, received_at, on_time,
                                           status, status_rank, content_type, body_sha256, body,
                                           data_values, value_count)
            VALUES (:id, 'DSRX', :ou, '2019', 'test', now(), true, 'RECEIVED', 0, 'application/json', 'x',
                    '{}', CAST(:values AS json), 1)"""),
            {"id": return_id, "ou": village, "values": json.dumps([value])})
    try:
        for change, expected in ((dict(element, valueType="INTEGER"), "on their way"),
                                 (dict(data_set, periodType="Quarterly"), "on their way")):
            key = "dataElements" if "valueType" in change else "dataSets"
            r = system.post("/api/metadata", json={key: [change]})
            assert r.status_code == 409 and expected in r.text, r.text
        with db.begin() as conn:  # judged: rejected, it brings nothing in
            conn.execute(sa.text("UPDATE submission.return SET status = 'REJECTED', status_rank = 1 WHERE id = :id"),
                         {"id": return_id})
        assert system.import_metadata({"dataElements": [dict(element, valueType="INTEGER")],
                                       "dataSets": [dict(data_set, periodType="Quarterly")]})["stats"]["updated"] == 2
    finally:
        with db.begin() as conn:
            conn.execute(sa.text("DELETE FROM submission.return WHERE id = :id"), {"id": return_id})


def test_a_data_sets_period_type_changes_only_before_returns_are_stored(system, world):
    """Its stored returns' periods would no longer be its periods: completeness lost them
    and they could not be corrected, while analytics still showed their values."""
    t, codes, doc, _ = world
    fresh = {"code": "DSREGQ", "name": "Not used yet", "periodType": "Yearly", "dataElements": [codes["pop"]],
             "orgUnitLevel": 4}
    system.import_metadata({"dataSets": [fresh]})
    assert system.import_metadata({"dataSets": [dict(fresh, periodType="Quarterly")]})["stats"]["updated"] == 1
    # the world's data set holds returns (the test above sent some)
    village = t.villages[t.districts[1]][0]
    sent = system.submit(village_return(codes, village, "2018", 1, 1))
    assert system.wait_status(sent.json()["id"])["status"] == "AGGREGATED"
    r = system.post("/api/metadata", json={"dataSets": [dict(doc["dataSets"][0], periodType="Monthly")]})
    assert r.status_code == 409, r.text
    assert any(e["object"] == codes["ds"] and "periodType cannot change from Yearly to Monthly" in e["message"]
               for e in r.json()["errors"]), r.text
    c = system.get(f"/api/completeness?ds={codes['ds']}&ou={village}&pe=2018").json()
    assert c["actual"] == 1  # unchanged


def test_non_admin_may_not_import_and_unparseable_json_is_400(system, world):
    t, *_ = world
    token = system.create_user("reg-operator", "operator", None)
    r = system.post("/api/metadata", json={}, token=token)
    assert r.status_code == 403 and "import metadata" in r.json()["message"]
    r = system.post("/api/metadata", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_a_metadata_change_takes_effect_at_once_without_restart(system, world):
    """Replicas are updated from events before the import answers: the very next return may use it."""
    t, codes, doc, _ = world
    extra = {"code": "BIRTHSREG", "name": "Births", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "aggregationType": "SUM"}
    ds = dict(doc["dataSets"][0], dataElements=doc["dataSets"][0]["dataElements"] + ["BIRTHSREG"])
    system.import_metadata({"dataElements": [extra], "dataSets": [ds]})
    village = t.villages[t.districts[0]][1]
    body = {"dataSet": codes["ds"], "period": "2024", "orgUnit": village,
            "dataValues": [{"dataElement": "BIRTHSREG", "value": "7"}]}
    r = system.submit(body)
    assert r.status_code == 202, r.text
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    assert system.analytics("BIRTHSREG", t.province, "2024") == {("BIRTHSREG", t.province, "2024"): 7}


def test_a_replaced_metadata_snapshot_is_freed_though_it_was_frozen(system, world, settings):
    """Snapshots are put beyond the cyclic collector's reach (gc.freeze, shared.replica);
    the one a metadata change replaces must still go, or every change would leak one."""
    t, codes, doc, _ = world
    village = t.villages[t.districts[-1]][-1]
    sent = system.submit(village_return(codes, village, "2015", 3, 4))
    assert system.wait_status(sent.json()["id"])["status"] == "AGGREGATED"
    assert gc.get_freeze_count() > 0
    # this module's system only (the caches are per process; earlier modules' stay behind)
    before = {key: weakref.ref(cache.snapshot) for key, cache in replica._caches.items()
              if cache.snapshot and key[0] == settings.database_url}
    assert len(before) >= 3  # submission, validation, aggregation (notify loads its own when needed)

    system.import_metadata({"dataElements": [{"code": "FREEZE", "name": "Frozen", "valueType": "NUMBER",
                                              "aggregationType": "SUM"}]})
    sent = system.submit(village_return(codes, village, "2016", 3, 4))
    assert system.wait_status(sent.json()["id"])["status"] == "AGGREGATED"
    # every service has loaded the new snapshot by now (each took part in the return) ...
    assert all(replica._caches[key].snapshot is not before[key]() for key in before)
    # ... and the old ones are gone (by reference counting, or by the collection that
    # precedes the next freeze), without a collection of this test's own
    assert [key for key, ref in before.items() if ref() is not None] == []


# ------------------------------------------------------------------ hierarchy over time

def test_a_move_re_dated_later_gives_the_years_between_back_to_the_old_district(system, world):
    """The same parent posted with a later parentFrom was "no change" (200, ignored), and the
    years between stayed with the new district in every total (a probe's MEDIUM)."""
    t, codes, doc, _ = world
    d1, d2, village = "REGRED1", "REGRED2", "REGREDATE"
    system.import_metadata({"orgUnits": [
        {"code": d, "name": f"District {d}", "parent": t.province, "openingDate": "2000-01-01"} for d in (d1, d2)] + [
        {"code": village, "name": "Re-dated", "parent": d1, "openingDate": "2000-01-01"}],
        "dataSets": [{**doc["dataSets"][0], "orgUnits": [village]}]})
    for period, males in (("2011", 10), ("2012", 20)):
        r = system.submit(village_return(codes, village, period, males, 0))
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    pop = codes["pop"]
    system.import_metadata({"orgUnits": [{"code": village, "parent": d2, "parentFrom": "2011-01-01"}]})
    assert system.analytics(pop, d2, "2011;2012") == {(pop, d2, "2011"): 10, (pop, d2, "2012"): 20}
    r = system.import_metadata({"orgUnits": [{"code": village, "parent": d2, "parentFrom": "2012-01-01"}]})
    assert r["stats"]["updated"] == 1, r
    assert unit(system, village)["hierarchy"] == [{"parent": d1, "from": "2000-01-01", "to": "2012-01-01"},
                                                  {"parent": d2, "from": "2012-01-01", "to": None}]
    assert system.analytics(pop, f"{d1};{d2}", "2011;2012") == {(pop, d1, "2011"): 10, (pop, d2, "2012"): 20}


def test_a_moved_village_keeps_its_history_with_the_old_district(system, world):
    t, codes, doc, _ = world
    d1, d2 = t.districts
    village = t.villages[d1][0]
    for period, males in (("2023", 100), ("2025", 300)):
        r = system.submit(village_return(codes, village, period, males, 0))
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    # re-districted from 2025-01-01: 2023 stays with d1, 2025 moves to d2
    system.import_metadata({"orgUnits": [{"code": village, "parent": d2, "parentFrom": "2025-01-01"}]})
    pop = codes["pop"]
    totals = system.analytics(pop, f"{d1};{d2};{t.province}", "2023;2025")
    assert totals.get((pop, d1, "2023")) == 100 and (pop, d2, "2023") not in totals
    assert totals.get((pop, d2, "2025")) == 300 and (pop, d1, "2025") not in totals
    assert totals[(pop, t.province, "2023")] == 100 and totals[(pop, t.province, "2025")] == 300
    moved = unit(system, village)
    assert moved["parent"] == d2
    assert moved["hierarchy"] == [{"parent": d1, "from": "2000-01-01", "to": "2025-01-01"},
                                  {"parent": d2, "from": "2025-01-01", "to": None}]
    # a return arriving after the move, for a period before it, still counts for the old district
    r = system.submit(village_return(codes, village, "2024", 50, 0))
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    assert system.analytics(pop, d1, "2024") == {(pop, d1, "2024"): 50}
    assert system.analytics(pop, d2, "2024") == {}
    # whose to write: the old district's reporter its years before the move, the new one's
    # the year of the move on; the new one may not rewrite the old district's totals
    old_rep = system.create_user(f"rep-old-{village}", "reporter", d1)
    new_rep = system.create_user(f"rep-new-{village}", "reporter", d2)
    r = system.submit(village_return(codes, village, "2024", 60, 0), token=new_rep)
    assert r.status_code == 403 and "2024" in r.json()["message"] and "belongs where it was then" in r.json()["message"], r.text
    r = system.submit({**village_return(codes, village, "2024", 1, 1), "dataValues": [
        *village_return(codes, village, "2024", 1, 1)["dataValues"],
        {"dataElement": codes["pop"], "categoryOptionCombo": "M", "value": "9", "period": "2025"}]}, token=old_rep)
    assert r.status_code == 403 and "2025" in r.json()["message"], r.text  # not the new district's year
    r = system.submit(village_return(codes, village, "2024", 70, 0), token=old_rep)
    assert r.status_code == 202, r.text
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    assert system.analytics(pop, d1, "2024") == {(pop, d1, "2024"): 70}
    r = system.submit(village_return(codes, village, "2025", 310, 0), token=new_rep)
    assert r.status_code == 202, r.text
    # and to read by the village's own code: the old district its years there (what it
    # wrote and corrected), not the year of the move on; the new district from the move on,
    # not the years its own totals never held
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    assert system.analytics(pop, village, "2024", token=old_rep) == {(pop, village, "2024"): 70}
    for pe in ("2025", "2024;2025"):
        r = system.get(f"/api/analytics?dx={pop}&ou={village}&pe={pe}", token=old_rep)
        assert r.status_code == 403 and village in r.json()["message"], (pe, r.text)
    assert system.analytics(pop, village, "2025", token=new_rep) == {(pop, village, "2025"): 310}
    r = system.get(f"/api/analytics?dx={pop}&ou={village}&pe=2024;2025", token=new_rep)
    assert r.status_code == 403 and village in r.json()["message"], r.text
    assert system.get(f"/api/dataValueSets?dataSet={codes['ds']}&orgUnit={village}&period=2024",
                      token=new_rep).status_code == 403
    r = system.get(f"/api/dataValueSets?dataSet={codes['ds']}&orgUnit={village}&period=2024", token=old_rep)
    assert r.status_code == 200 and {v["value"] for v in r.json()["dataValues"]} == {"70", "0"}, r.text
    assert system.get(f"/api/dataValueSets?dataSet={codes['ds']}&orgUnit={village}&period=2025",
                      token=old_rep).status_code == 403
    # by dates too: a span wholly before the move, not one reaching past it
    r = system.get(f"/api/dataValueSets?dataSet={codes['ds']}&orgUnit={village}&startDate=2023-01-01"
                   f"&endDate=2024-12-31", token=old_rep)
    assert r.status_code == 200 and {v["period"] for v in r.json()["dataValues"]} == {"2023", "2024"}, r.text
    assert system.get(f"/api/dataValueSets?dataSet={codes['ds']}&orgUnit={village}&startDate=2024-01-01"
                      f"&endDate=2025-12-31", token=old_rep).status_code == 403
    r = system.get(f"/api/completeness?ds={codes['ds']}&ou={village}&pe=2024", token=old_rep)
    assert r.status_code == 200 and r.json()["actual"] == 1, r.text
    assert system.get(f"/api/completeness?ds={codes['ds']}&ou={village}&pe=2025", token=old_rep).status_code == 403


def test_moving_a_district_moves_its_villages(system, world):
    t, codes, doc, _ = world
    other = f"P2{t.uid}"
    system.import_metadata({"orgUnits": [
        {"code": other, "name": "Second province", "parent": t.country, "openingDate": "2000-01-01"}]})
    d2 = t.districts[1]
    village = t.villages[d2][1]
    r = system.submit(village_return(codes, village, "2022", 11, 12))
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    system.import_metadata({"orgUnits": [{"code": d2, "parent": other, "parentFrom": "2022-01-01"}]})
    assert unit(system, village)["path"] == f"/{t.country}/{other}/{d2}/{village}/"
    assert system.analytics(codes["pop"], other, "2022") == {(codes["pop"], other, "2022"): 23}
    assert system.analytics(codes["pop"], t.province, "2022") == {}
    # move it back for the other tests, from the same date
    system.import_metadata({"orgUnits": [{"code": d2, "parent": t.province, "parentFrom": "2022-01-01"}]})
    assert system.analytics(codes["pop"], t.province, "2022") == {(codes["pop"], t.province, "2022"): 23}


def test_deeper_units_are_allowed(system, world):
    """Depth is open: an office under a village is level 5."""
    t, *_ = world
    village = t.villages[t.districts[0]][1]
    system.import_metadata({"orgUnits": [{"code": f"OFF{t.uid}", "name": "Health post", "parent": village,
                                          "openingDate": "2010-01-01"}]})
    assert unit(system, f"OFF{t.uid}")["level"] == 5


def test_a_closed_unit_accepts_no_return_for_periods_after_closing(system, world):
    t, codes, doc, _ = world
    village = f"VCL{t.uid}"
    system.import_metadata({"orgUnits": [{"code": village, "name": "Closed village", "parent": t.districts[0],
                                          "openingDate": "2000-01-01", "closedDate": "2023-06-30"}]})
    ok = system.submit(village_return(codes, village, "2023", 1, 1))
    assert ok.status_code == 202
    r = system.submit(village_return(codes, village, "2024", 1, 1))
    assert r.status_code == 400
    assert any("not open in period 2024" in c["message"] for c in r.json()["conflicts"])


# ------------------------------------------------------------------ users and scopes

def test_users_get_a_token_and_reposting_rotates_it(system, world, settings):
    t, *_ = world
    r = system.post("/api/users", json={"username": "reg-sup", "role": "supervisor", "orgUnit": t.districts[0]})
    assert r.status_code == 201
    body = r.json()
    assert {k: body[k] for k in ("username", "role", "orgUnit")} == \
        {"username": "reg-sup", "role": "supervisor", "orgUnit": t.districts[0]}
    old = body["token"]
    assert system.get(f"/api/orgUnits/{t.districts[0]}", token=old).status_code == 200
    new = system.create_user("reg-sup", "supervisor", t.districts[0])
    assert new != old
    assert system.get(f"/api/orgUnits/{t.districts[0]}", token=old).status_code == 401
    assert system.get(f"/api/orgUnits/{t.districts[0]}", token=new).status_code == 200
    # only the hash is stored
    with engine_for(settings.database_url).connect() as conn:
        stored = conn.execute(sa.text("SELECT token_hash FROM registry.user_account WHERE username = 'reg-sup'")).scalar()
    assert stored == token_hash(new) and new not in stored


@pytest.mark.parametrize("body, field", [
    ({"username": "x", "role": "king", "orgUnit": None}, "role"),
    ({"username": "x", "role": "reporter", "orgUnit": "NOWHERE"}, "orgUnit"),
    ({"username": "x", "role": "reporter"}, "orgUnit"),
    ({"username": "bad name!", "role": "admin"}, "username"),
    ({"username": "admin", "role": "reporter", "orgUnit": "D1REG"}, "username"),  # the bootstrap token's
    ({"username": "Admin", "role": "admin"}, "username"),        # in any case or width, as it reads
    ({"username": "ＡＤＭＩＮ", "role": "admin"}, "username"),
    # the province's supervisor focal point is outside a district user's scope
    ({"username": "x", "role": "supervisor", "orgUnit": "D2REG", "focalPoint": "FPREGSUP"}, "focalPoint"),
])
def test_bad_users_are_400_naming_the_field(system, world, body, field):
    r = system.post("/api/users", json=body)
    assert r.status_code == 400, r.text
    assert any(c["object"] == field for c in r.json()["conflicts"])


def test_a_username_may_be_lao(system, world):
    t, *_ = world
    r = system.post("/api/users", json={"username": "ສົມພອນ.ວົງໄຊ", "role": "reporter", "orgUnit": t.districts[0]})
    assert r.status_code == 201, r.text
    assert r.json()["username"] == "ສົມພອນ.ວົງໄຊ"
    assert system.get(f"/api/orgUnits/{t.districts[0]}", token=r.json()["token"]).status_code == 200
    # one name however its marks were typed: the tone mark before the vowel sign, or after,
    # is the same name on screen, and a re-post rotates its token (it made a second user,
    # two identical-looking names in storedBy, the first token still valid)
    typed = {"role": "reporter", "orgUnit": t.districts[0]}
    first = system.post("/api/users", json={"username": "ກຸ່ມ.ລາວ", **typed}).json()  # (vowel, then tone)
    again = system.post("/api/users", json={"username": "ກ\u0ec8\u0eb8ມ.ລາວ", **typed})  # tone, then vowel
    assert again.status_code == 201 and again.json()["username"] == first["username"] == "ກຸ່ມ.ລາວ", again.text
    assert system.get(f"/api/orgUnits/{t.districts[0]}", token=first["token"]).status_code == 401
    assert system.get(f"/api/orgUnits/{t.districts[0]}", token=again.json()["token"]).status_code == 200


def test_only_admins_create_users(system, world):
    t, *_ = world
    token = system.create_user("reg-rep", "reporter", t.districts[0])
    r = system.post("/api/users", json={"username": "sneaky", "role": "admin"}, token=token)
    assert r.status_code == 403 and "manage users" in r.json()["message"]


def test_a_supervisor_sees_only_its_subtree(system, world):
    t, codes, *_ = world
    d1, d2 = t.districts
    token = system.create_user("reg-sup-scope", "supervisor", d1)
    stayed = t.villages[d1][1]  # (villages[d1][0] was moved to d2 by an earlier test)
    assert system.get(f"/api/orgUnits/{stayed}", token=token).status_code == 200
    r = system.get(f"/api/orgUnits/{d2}", token=token)
    assert r.status_code == 403 and d2 in r.json()["message"]
    assert system.get(f"/api/orgUnits/{t.province}", token=token).status_code == 403
    r = system.get(f"/api/analytics?dx={codes['pop']}&ou={d2}&pe=2023", token=token)
    assert r.status_code == 403 and d2 in r.json()["message"]
    assert system.get(f"/api/analytics?dx={codes['pop']}&ou={d1}&pe=2023", token=token).status_code == 200
    # supervisors read, they do not submit, nor edit focal points (metadata is the admin's)
    r = system.submit(village_return(codes, stayed, "2023", 1, 1), token=token)
    assert r.status_code == 403 and "submit returns" in r.json()["message"]
    r = system.put("/api/focalPoints/FPREGSUP", json={"email": "sup.edit@example.la"}, token=token)
    assert r.status_code == 403 and "edit focal points" in r.json()["message"]


def test_statnet_user_create_on_the_command_line(system, world, settings, backend):
    t, *_ = world
    env = {**os.environ, "DATABASE_URL": settings.database_url, "AMQP_URI": settings.amqp_uri,
           "STATNET_LOG_FORMAT": "text"}
    done = subprocess.run([sys.executable, "-m", "services.cli", "user", "create", "--username", "cli-rep",
                           "--role", "reporter", "--org-unit", t.districts[0]],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "not running" not in done.stderr, done.stderr
    token = json.loads(done.stdout)["token"]
    assert system.get(f"/api/orgUnits/{t.districts[0]}", token=token).status_code == 200
    # a rotation with the registry stopped (here: a broker where none runs) says what it means
    vhost = backend.new_vhost()
    try:
        alone = subprocess.run([sys.executable, "-m", "services.cli", "user", "create", "--username", "cli-rep",
                                "--role", "reporter", "--org-unit", t.districts[0]],
                               env={**env, "AMQP_URI": backend.amqp_uri(vhost)}, capture_output=True, text=True,
                               timeout=60)
    finally:
        backend.drop_vhost(vhost)
    assert alone.returncode == 0 and "registry service is not running" in alone.stderr, alone.stderr
    assert json.loads(alone.stdout)["token"] != token
    bad = subprocess.run([sys.executable, "-m", "services.cli", "user", "create", "--username", "cli-rep2",
                          "--role", "reporter", "--org-unit", "NOWHERE"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "NOWHERE" in bad.stderr


# ------------------------------------------------------------------ focal points and learning

def test_focal_points_listed_and_updated(system, world):
    t, *_ = world
    r = system.get(f"/api/focalPoints?orgUnit={t.province}")
    assert [fp["code"] for fp in r.json()["focalPoints"]] == ["FPREGSUP"]
    r = system.put("/api/focalPoints/FPREGSUP", json={"email": "new.sup@example.la", "language": "en"})
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "new.sup@example.la" and r.json()["name"] == "ຜູ້ກວດກາ"
    r = system.put("/api/focalPoints/FPREGSUP", json={"email": "not-an-email"})
    assert r.status_code == 400 and any(c["object"] == "email" for c in r.json()["conflicts"])
    r = system.put("/api/focalPoints/FPREGSUP", json={"orgUnit": "NOWHERE"})
    assert r.status_code == 409 and "NOWHERE" in str(r.json()["errors"])
    # a blank name, a phone no one could call, a boolean given as a word: told, not stored
    for field, value in (("name", "   "), ("phone", "abc"), ("digest", "yes"), ("digest", 1)):
        r = system.put("/api/focalPoints/FPREGSUP", json={field: value})
        assert r.status_code == 400 and [c["object"] for c in r.json()["conflicts"]] == [field], (field, r.text)
    r = system.put("/api/focalPoints/FPREGSUP", json={"phone": "+856 20 5555 1234", "digest": True})
    assert r.status_code == 200 and (r.json()["phone"], r.json()["digest"]) == ("+856 20 5555 1234", True), r.text
    assert system.put("/api/focalPoints/FPREGSUP", json={"digest": False}).json()["digest"] is False


def test_accepted_returns_update_last_submission_and_last_active(system, world):
    t, codes, *_ = world
    village = t.villages[t.districts[0]][0]
    r = system.post("/api/users", json={"username": "FPREGREP", "role": "reporter", "orgUnit": village})
    token = r.json()["token"]
    assert r.json()["focalPoint"] == "FPREGREP"  # a user named like a focal point acts for it
    sent = system.submit(village_return(codes, village, "2021", 5, 6), token=token)
    sub = system.wait_status(sent.json()["id"])
    assert sub["status"] == "AGGREGATED"
    shown = unit(system, village)
    last = {s["dataSet"]: s for s in shown["lastSubmission"]}
    assert codes["ds"] in last
    reporter = next(fp for fp in shown["focalPoints"] if fp["code"] == "FPREGREP")
    assert reporter["lastActiveAt"] is not None and reporter["lastActiveAt"].endswith("+07:00")


def test_a_reporter_acts_for_the_one_reporter_focal_point_of_its_unit(system, world):
    """No focalPoint given and no focal point of its name: the person responsible at the
    user's unit in its role, when there is exactly one, is whose lastActiveAt moves."""
    t, codes, *_ = world
    village = t.villages[t.districts[1]][1]
    system.import_metadata({"focalPoints": [{"code": "FPREGREP2", "name": "ຜູ້ລາຍງານ", "orgUnit": village,
                                             "role": "reporter", "language": "lo"}]})
    token = system.create_user("plain-reporter", "reporter", village)
    sent = system.submit(village_return(codes, village, "2017", 2, 3), token=token)
    assert system.wait_status(sent.json()["id"])["status"] == "AGGREGATED"
    fp = next(f for f in unit(system, village)["focalPoints"] if f["code"] == "FPREGREP2")
    assert fp["lastActiveAt"] is not None
    # a name alike outside the user's scope is a coincidence, not a link
    r = system.post("/api/users", json={"username": "FPREGSUP", "role": "reporter", "orgUnit": village})
    assert r.status_code == 201 and r.json()["focalPoint"] is None


def test_a_users_focal_point_holds_through_rotation_and_whichever_came_first(system, world):
    """Rotating a token as the contract does (username, role, orgUnit) keeps the user's focal
    point (it cut the link); a user made before the focal point named like it acts for it
    (the link was looked for only when the user was made). The unit has two reporter focal
    points, so neither is credited as its only one."""
    t, codes, *_ = world
    village = t.villages[t.districts[0]][1]
    user = {"username": "FPREGLATE", "role": "reporter", "orgUnit": village}
    early = system.post("/api/users", json=user)
    assert early.status_code == 201 and early.json()["focalPoint"] is None  # no such focal point yet
    system.import_metadata({"focalPoints": [
        {"code": code, "name": "ຜູ້ລາຍງານ", "orgUnit": village, "role": "reporter", "language": "lo"}
        for code in ("FPREGLATE", "FPREGPICK")]})
    r = system.post("/api/users", json={"username": "picker", "role": "reporter", "orgUnit": village,
                                        "focalPoint": "FPREGPICK"})
    assert r.json()["focalPoint"] == "FPREGPICK"
    rotated = system.post("/api/users", json={"username": "picker", "role": "reporter", "orgUnit": village})
    assert rotated.status_code == 201 and rotated.json()["focalPoint"] == "FPREGPICK"

    def last_active() -> dict:
        return {f["code"]: f["lastActiveAt"] for f in unit(system, village)["focalPoints"]}

    for token, year in ((early.json()["token"], "2015"), (rotated.json()["token"], "2014")):
        sent = system.submit(village_return(codes, village, year, 2, 3), token=token)
        assert system.wait_status(sent.json()["id"])["status"] == "AGGREGATED"
    assert last_active()["FPREGLATE"] is not None and last_active()["FPREGPICK"] is not None


def test_a_focal_points_scope_is_where_its_unit_sits_today_not_where_it_is_moving(system, world):
    """A village moving to the other district next year is in its own district today: its
    supervisor may act for the village's focal point, the other district's not yet (the
    last placement was read: refused today's, allowed next year's)."""
    t, *_ = world
    here, there = t.districts
    next_year = today().year + 1
    system.import_metadata({
        "orgUnits": [{"code": "REGMOVING", "name": "Moving village", "nameLo": "ບ້ານຍ້າຍ", "parent": here,
                      "openingDate": "2000-01-01"}],
        "focalPoints": [{"code": "FPREGMOVE", "name": "ຜູ້ລາຍງານ", "orgUnit": "REGMOVING", "role": "reporter",
                         "language": "lo"}]})
    system.import_metadata({"orgUnits": [{"code": "REGMOVING", "name": "Moving village", "nameLo": "ບ້ານຍ້າຍ",
                                          "parent": there, "parentFrom": f"{next_year}-01-01",
                                          "openingDate": "2000-01-01"}]})
    ahead = system.post("/api/users", json={"username": "reg-sup-there", "role": "supervisor", "orgUnit": there,
                                            "focalPoint": "FPREGMOVE"})
    assert ahead.status_code == 400 and "outside the user's scope" in ahead.text, ahead.text
    today_ = system.post("/api/users", json={"username": "reg-sup-here", "role": "supervisor", "orgUnit": here,
                                             "focalPoint": "FPREGMOVE"})
    assert today_.status_code == 201 and today_.json()["focalPoint"] == "FPREGMOVE", today_.text


def test_a_user_moved_elsewhere_no_longer_reads_what_it_sent(system, world):
    t, codes, *_ = world
    village, elsewhere = t.villages[t.districts[0]][1], t.villages[t.districts[1]][0]
    token = system.create_user("reg-mover", "reporter", village)
    sent = system.submit(village_return(codes, village, "2018", 1, 2), token=token)
    assert system.wait_status(sent.json()["id"])["status"] == "AGGREGATED"
    assert system.get(f"/api/submissions/{sent.json()['id']}", token=token).status_code == 200
    token = system.create_user("reg-mover", "reporter", elsewhere)  # re-posted: a new scope
    r = system.get(f"/api/submissions/{sent.json()['id']}", token=token)
    assert r.status_code == 403 and village in r.json()["message"]


def test_coverage_lists_units_without_focal_points(system, world):
    t, *_ = world
    r = system.get(f"/api/orgUnits/{t.province}/coverage")
    assert r.status_code == 200
    body = r.json()
    assert t.villages[t.districts[0]][0] not in body["withoutReporter"]  # has FPREGREP
    assert t.villages[t.districts[1]][0] in body["withoutReporter"]
    assert body["withoutSupervisor"] == []  # the province supervisor covers the subtree
    units = {u["code"]: u for u in body["units"]}
    assert units[t.villages[t.districts[0]][0]]["missing"] == []
    # a reporter is wanted where returns are: the province reports nothing (it was listed)
    assert t.province not in body["withoutReporter"] and units[t.province]["reports"] is False
    assert units[t.villages[t.districts[1]][0]]["reports"] is True
    # a unit opening next year has a place already (every unit has one on every day), but
    # nobody is missing from it yet
    future = f"FUT{t.province}"
    system.import_metadata({"orgUnits": [{"code": future, "name": "Opens next year", "parent": t.province,
                                          "openingDate": f"{today().year + 1}-01-01"}]})
    body = system.get(f"/api/orgUnits/{t.province}/coverage").json()
    assert future not in {u["code"] for u in body["units"]} and future not in body["withoutReporter"]


def test_the_luang_namtha_reference_metadata_loads(system):
    from services.registry import reference

    doc = reference.load()
    r = system.import_metadata(doc)
    total = sum(len(doc[k]) for k in doc)
    assert r["stats"]["created"] == total and r["stats"]["updated"] == 0
    province = unit(system, "03")
    assert province["nameLo"] == "ຫຼວງນ້ຳທາ"
    assert {"0301", "0302", "0303", "0304", "0305"} <= set(province["children"])
    assert unit(system, "0301001")["generated"] is True
    coverage = system.get("/api/orgUnits/03/coverage").json()
    villages = [u for u in coverage["units"] if u["level"] == 4]
    assert len(villages) == 412
    # every village has a supervisor (its district's); about a fifth have no collector yet
    assert not [u for u in villages if "supervisor" in u["missing"]]
    assert 40 < len([u for u in villages if "reporter" in u["missing"]]) < 130


def test_the_metadata_export_posts_back_as_it_stands(system, world):
    """GET /api/metadata is the import document: everything the registry holds (Lao names,
    disaggregations, outliers, moved units with parentFrom, other modules' metadata too)
    posted back unchanged is all `ignored`, and exported again is the same document."""
    t, codes, doc, _ = world
    system.import_metadata({"dataElements": [{"code": codes["hh"], "outliers": {"min": "0", "max": "900"}}]})
    exported = system.get("/api/metadata")
    assert exported.status_code == 200, exported.text
    body = exported.json()
    assert set(body) == {"orgUnits", "dataElements", "dataSets", "validationRules", "focalPoints"}
    units = {u["code"]: u for u in body["orgUnits"]}
    assert units[t.province]["nameLo"] == "ແຂວງ" and units[t.province]["parent"] == t.country
    # parents come before their children, so a new server can take the document in one go
    order = [u["code"] for u in body["orgUnits"]]
    assert order.index(t.country) < order.index(t.province) < order.index(t.districts[0])
    element = next(e for e in body["dataElements"] if e["code"] == codes["pop"])
    assert element["disaggregation"] == ["M", "F"] and element["nameLo"] == "ປະຊາກອນ"
    assert next(e for e in body["dataElements"] if e["code"] == codes["hh"])["outliers"] == {
        "enabled": True, "min": "0", "max": "900"}
    assert next(f for f in body["focalPoints"] if f["code"] == "FPREGSUP")["name"] == "ຜູ້ກວດກາ"
    moved = [u for u in body["orgUnits"] if "hierarchy" in u]
    assert moved, "the moves of the tests above show as a hierarchy"
    again = system.import_metadata(body)
    assert again["stats"]["created"] == again["stats"]["updated"] == 0, again
    assert again["stats"]["ignored"] == sum(len(v) for v in body.values())
    assert system.get("/api/metadata").json() == body
    # a new server takes a moved unit's whole timeline: the same unit under new codes (its
    # children first dropped) gets the same parents on the same days as the original
    for original in moved[:3]:
        copy = {**original, "code": f"{original['code']}-COPY"}
        system.import_metadata({"orgUnits": [copy]})
        assert unit(system, copy["code"])["hierarchy"] == unit(system, original["code"])["hierarchy"]


def test_a_data_sets_lists_are_sets_whatever_order_they_come_in(system, world):
    """The export lists a data set's units and elements sorted: a data set posted with them in
    another order, then its export posted back, was one "updated" (and a metadata event to
    every replica) for nothing; so was the same data set with its elements reordered."""
    t, codes, _, _ = world
    ds = {"code": "ORDERDS", "name": "Order", "periodType": "Monthly",
          "dataElements": [codes["pop"], codes["hh"]], "orgUnits": [t.districts[1], t.districts[0], t.province]}
    assert system.import_metadata({"dataSets": [ds]})["stats"]["created"] == 1
    exported = next(d for d in system.get("/api/metadata?dataSets=true").json()["dataSets"] if d["code"] == "ORDERDS")
    assert exported["orgUnits"] == sorted(ds["orgUnits"])
    for again in (exported, {**ds, "dataElements": ds["dataElements"][::-1]}, ds):
        stats = system.import_metadata({"dataSets": [again]})["stats"]
        assert (stats["updated"], stats["ignored"]) == (0, 1), (again, stats)
    # a real change is one
    stats = system.import_metadata({"dataSets": [{**ds, "orgUnits": ds["orgUnits"][:2]}]})["stats"]
    assert stats["updated"] == 1


def test_the_metadata_export_asked_in_parts_and_in_scope(system, world):
    t, codes, _, _ = world
    only = system.get("/api/metadata?dataSets=true&dataElements=1").json()
    assert set(only) == {"dataSets", "dataElements"}
    assert next(d for d in only["dataSets"] if d["code"] == codes["ds"])["orgUnitLevel"] == 4
    d1 = t.districts[0]
    supervisor = system.create_user(f"meta-{d1}", "supervisor", d1)
    scoped = system.get("/api/metadata", token=supervisor).json()
    subtree, todo = set(), [d1]
    while todo:
        subtree.add(code := todo.pop())
        todo += unit(system, code)["children"]
    assert {u["code"] for u in scoped["orgUnits"]} == subtree and len(subtree) > 2
    assert all(f["orgUnit"] in {u["code"] for u in scoped["orgUnits"]} for f in scoped["focalPoints"])
    assert any(d["code"] == codes["ds"] for d in scoped["dataSets"])  # what its units report against
    for bad, words in (("dataSets=maybe", "dataSets: 'maybe'"), ("orgunits=true", "unknown parameter(s) orgunits")):
        r = system.get(f"/api/metadata?{bad}")
        assert r.status_code == 400 and words in r.json()["message"], r.text
    assert system.get("/api/metadata", token="nobody").status_code == 401


def test_a_replica_snapshot_is_read_in_one_database_snapshot(system, settings, monkeypatch):
    """A snapshot is read table by table; under READ COMMITTED a metadata change applied
    between the paths and the units gave a unit without paths, and aggregation failed on
    it ("max() arg is an empty sequence", seen with two instances under load)."""
    import datetime as dt
    import types

    from services.aggregation import tables as aggregation_tables
    from shared import replica
    from shared.db import engine_for

    engine = engine_for(settings.database_url)
    tables = aggregation_tables.replica
    real_load = replica._load

    def racing_load(conn, t, version):
        reads = []

        class Racing:  # the change commits right after the first read (the paths)
            def execute(self, *args, **kwargs):
                if len(reads) == 1:
                    with engine.begin() as other:
                        other.execute(t.org_unit.insert().values(code="RACEOU", name="Raced",
                                                                 opening_date=dt.date(2020, 1, 1),
                                                                 version=10**12))
                        other.execute(t.org_unit_path.insert().values(code="RACEOU", valid_from=dt.date(1900, 1, 1),
                                                                      path="/RACEOU/", level=1))
                reads.append(args)
                return conn.execute(*args, **kwargs)

        return real_load(Racing(), t, version)

    monkeypatch.setattr(replica, "_load", racing_load)
    access = replica.ReplicaAccess(types.SimpleNamespace(engine=engine, tables=tables, cache=replica._Cache()))
    try:
        snapshot = access._load_consistent()
        raced = snapshot.org_units.get("RACEOU")
        assert raced is None or raced.paths, "a unit without its paths"
    finally:
        with engine.begin() as conn:
            conn.execute(tables.org_unit_path.delete().where(tables.org_unit_path.c.code == "RACEOU"))
            conn.execute(tables.org_unit.delete().where(tables.org_unit.c.code == "RACEOU"))


def test_a_batch_that_read_the_metadata_before_a_move_writes_by_the_new_paths(system, world, monkeypatch):
    """The move commits (its re-path done) after a batch of returns read the metadata and
    before it got its locks: the batch must not write by the old paths it read, which no
    later re-path would mend. Taken in this order on purpose: the move is imported from
    inside the batch's lock call."""
    from services.aggregation import facts

    t, codes, _, _ = world
    d1, d2 = t.districts
    village, ds, hh = "VMOVFIRST", "DSMFIRST", codes["hh"]
    system.import_metadata({
        "orgUnits": [{"code": village, "name": "Village moved first", "nameLo": "ບ້ານຍ້າຍກ່ອນ", "parent": d1,
                      "openingDate": "2020-01-01"}],
        "dataSets": [{"code": ds, "name": "Monthly", "periodType": "Monthly", "dataElements": [hh],
                      "orgUnits": [village]}]})
    real_lock = facts.lock_unit_years
    moved = []

    def move_then_lock(conn, returns):
        if not moved and any(r["org_unit"] == village for r in returns):
            moved.append(system.import_metadata(
                {"orgUnits": [{"code": village, "parent": d2, "parentFrom": "2026-01-01"}]}))
        return real_lock(conn, returns)

    monkeypatch.setattr(facts, "lock_unit_years", move_then_lock)
    r = system.submit({"dataSet": ds, "period": "202603", "orgUnit": village,
                       "dataValues": [{"dataElement": hh, "value": "31"}]})
    assert r.status_code == 202, r.text
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED" and moved
    assert system.analytics(hh, d2, "202603") == {(hh, d2, "202603"): 31}
    assert system.analytics(hh, d1, "202603") == {}
    assert system.analytics(hh, d2, "2026") == {(hh, d2, "2026"): 31}


def test_a_village_moved_mid_month_is_the_old_districts_for_that_month_to_write_and_read(system, world):
    """Moved on 15 July: July began in the old district and is counted there. The new
    district could write it (overwriting a value in the old district's total) and read the
    village's months before the move by its code, returns and validation results included;
    the old district was refused its own July."""
    t, codes, doc, _ = world
    d1, d2 = t.districts
    village, ds = "VMOVREG", "DSMREG"
    system.import_metadata({
        "orgUnits": [{"code": village, "name": "Moving village", "parent": d1, "openingDate": "2020-01-01"}],
        "dataSets": [{"code": ds, "name": "Monthly", "periodType": "Monthly", "dataElements": [codes["hh"]],
                      "orgUnits": [village]}]})
    old_rep = system.create_user("rep-mid-old", "reporter", d1)
    new_rep = system.create_user("rep-mid-new", "reporter", d2)

    def send(period, value, token):
        return system.submit({"dataSet": ds, "period": period, "orgUnit": village,
                              "dataValues": [{"dataElement": codes["hh"], "value": str(value)}]}, token=token)

    sent = {pe: send(pe, v, old_rep).json()["id"] for pe, v in (("202606", 6), ("202607", 7))}
    for rid in sent.values():
        assert system.wait_status(rid)["status"] == "AGGREGATED"
    system.import_metadata({"orgUnits": [{"code": village, "parent": d2, "parentFrom": "2026-07-15"}]})
    r = send("202607", 2017, new_rep)
    assert r.status_code == 403 and "belongs where it was then" in r.json()["message"], r.text
    august = send("202608", 8, new_rep)
    assert august.status_code == 202 and system.wait_status(august.json()["id"])["status"] == "AGGREGATED"
    hh = codes["hh"]
    assert system.analytics(hh, d1, "202607") == {(hh, d1, "202607"): 7}

    def read(pe, token):
        return system.get(f"/api/analytics?dx={hh}&ou={village}&pe={pe}", token=token).status_code

    assert (read("202607", old_rep), read("202606", old_rep), read("2026", old_rep)) == (200, 200, 403)
    assert (read("202607", new_rep), read("202608", new_rep), read("2026", new_rep)) == (403, 200, 403)
    assert system.get(f"/api/submissions/{sent['202606']}", token=new_rep).status_code == 403
    assert system.get(f"/api/submissions/{sent['202606']}", token=old_rep).status_code == 200

    def results(token):
        r = system.get(f"/api/validationResults?ou={village}", token=token)
        assert r.status_code == 200, r.text
        return sorted(x["period"] for x in r.json()["validationResults"])

    assert results(old_rep) == ["202606", "202607"] and results(new_rep) == ["202608"]


def test_workers_of_a_process_just_started_all_asking_for_the_replica_never_wait_on_the_pool(settings, world,
                                                                                              monkeypatch):
    """A process restarted under load: every worker asks for the replica at once, none is
    loaded yet. The loader took a second connection from the pool while the workers waiting
    for it held the rest: nothing but 503s for minutes, until the load stopped (a chaos
    probe: submission with STATNET_DB_POOL=5 killed and restarted under 76 requests). Here
    a pool of two, eight workers and a slow load: each gets the snapshot."""
    import types

    import eventlet
    import sqlalchemy as sa

    from services.submission import tables as submission_tables
    from shared import db, replica

    engine = sa.create_engine(db.sqlalchemy_url(settings.database_url), pool_size=2, max_overflow=0,
                              pool_timeout=5)
    real_load = replica._load

    def slow_load(conn, t, version):
        eventlet.sleep(0.5)  # every worker is waiting by now
        return real_load(conn, t, version)

    monkeypatch.setattr(replica, "_load", slow_load)
    access = replica.ReplicaAccess(types.SimpleNamespace(engine=engine, tables=submission_tables.replica,
                                                         cache=replica._Cache()))
    try:
        pool = eventlet.GreenPool(8)
        got = list(pool.imap(lambda _: access.current(), range(8)))
        assert len({id(md) for md in got}) == 1 and got[0].org_units, "one snapshot, loaded once"
        # and a worker that holds its own connection in a transaction asks on it
        with engine.begin() as conn:
            access.invalidate()
            assert access.current(conn) is got[0]
    finally:
        engine.dispose()


def test_a_unit_taken_out_of_a_data_sets_list_keeps_its_past_periods(system, world):
    """Taken out of a data set's orgUnits, a village was taken out of its past too:
    completeness of January no longer expected it nor counted its return (analytics still
    summed its values), and it could not correct January. Now, for the periods begun before
    the day it was taken out (the month under way too, as a unit closing during a period is
    expected in it), it is still expected where it reported, and its to correct and load;
    it is chased for none. Put back, it is assigned again. A unit added by mistake and taken
    out again leaves no trace."""
    t, *_ = world
    kept, dropped = t.villages[t.districts[0]]
    ds, de = "REGXDS", "REGXDE"
    system.import_metadata({
        "dataElements": [{"code": de, "name": "Taken-out test", "valueType": "INTEGER", "aggregationType": "SUM"}],
        "dataSets": [{"code": ds, "name": "Explicit monthly", "periodType": "Monthly", "dataElements": [de],
                      "orgUnits": [kept, dropped], "timelyDays": 10, "expiryDays": 0}]})
    for unit in (kept, dropped):
        r = system.submit({"dataSet": ds, "period": "202501", "orgUnit": unit,
                           "dataValues": [{"dataElement": de, "value": "5"}]})
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    now = today().strftime("%Y%m")
    month_end = today().replace(day=28) + dt.timedelta(days=4)
    following = (month_end - dt.timedelta(days=month_end.day - 1)).strftime("%Y%m")

    def completeness(pe):
        c = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe={pe}").json()
        return c["expected"], c["actual"]

    def checked(as_of):
        report = system.post(f"/api/deadlines/check?asOf={as_of}&dryRun=true").json()
        return next(d["expected"] for d in report["dataSets"] if d["dataSet"] == ds)

    assert completeness("202501") == (2, 2) and completeness(following) == (2, 0)
    due = checked("2025-02-20")  # the months of the look-back before then, of both villages
    assert due > 0 and due % 2 == 0
    assert system.import_metadata({"dataSets": [{"code": ds, "orgUnits": [kept]}]})["stats"]["updated"] == 1
    wait_until(lambda: completeness(following) == (1, 0), message="next month without the unit taken out")
    assert completeness("202501") == (2, 2) and completeness(now) == (1, 0)  # (it did not report this month)
    assert checked("2025-02-20") == due // 2   # the deadline check chases only the unit still listed
    # January is still its to correct, and its past to load (the chunk was refused: not assigned)
    r = system.submit({"dataSet": ds, "period": "202501", "orgUnit": dropped,
                       "dataValues": [{"dataElement": de, "value": "6"}]})
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    past = ("dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,"
            f"comment,followup\n{de},202412,{dropped},,,4,,,,\n")
    r = system.post(f"/api/history?dataSet={ds}", data=past.encode(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    # and a CSV without ?dataSet= finds the data set by the period's day (it found none)
    csv_return = ("dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,"
                  f"comment,followup\n{de},202501,{dropped},,,7,,,,\n")
    r = system.post("/api/dataValueSets", data=csv_return.encode(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    # the export posted back changes nothing; a unit added by mistake, then taken out, was
    # expected (and late) for every month before
    again = system.import_metadata({"dataSets": [{"code": ds, "orgUnits": [kept]}]})
    assert again["stats"]["updated"] == 0
    mistake = t.villages[t.districts[1]][0]
    system.import_metadata({"dataSets": [{"code": ds, "orgUnits": [kept, mistake]}]})
    wait_until(lambda: completeness("202501") == (3, 2), message="the unit added")
    system.import_metadata({"dataSets": [{"code": ds, "orgUnits": [kept]}]})
    wait_until(lambda: completeness("202501") == (2, 2), message="the unit added by mistake gone again")
    # put back, the unit is assigned again
    system.import_metadata({"dataSets": [{"code": ds, "orgUnits": [kept, dropped]}]})
    wait_until(lambda: completeness(following) == (2, 0), message="the unit put back")


def _supervisor_with_alerts_waiting(system, settings, code: str, name: str, district: str, language: str,
                                    as_of: str) -> None:
    """A supervisor at ``district`` whose late alerts of the check ``as_of`` wait for a retry
    (a relay down), due in an hour: as alerts to someone may be when they leave or change role."""
    system.import_metadata({"focalPoints": [{"code": code, "name": name, "orgUnit": district, "role": "supervisor",
                                             "email": f"{code.lower()}@example.la", "language": language}]})
    assert system.post(f"/api/deadlines/check?asOf={as_of}").status_code == 200
    with engine_for(settings.database_url).begin() as conn:
        waiting = conn.execute(sa.text(
            "UPDATE notify.notification SET status = 'PENDING', next_attempt_at = now() + interval '1 hour' "
            "WHERE recipient = :code"), {"code": code}).rowcount
    assert waiting > 0


def test_a_focal_point_who_left_is_retired_addressed_no_more_and_kept(system, world, settings):
    """There was no way to take out a supervisor who left: PUT could only empty the address,
    and every deadline check then recorded alerts to them that FAILED for want of one, while
    coverage still counted them. DELETE retires them from today."""
    t, *_ = world
    district = t.districts[1]
    _supervisor_with_alerts_waiting(system, settings, "FPREGLEFT", "ຜູ້ກວດກາເກົ່າ", district, "lo", "2026-03-01")
    reporter = system.create_user("reg-left-rep", "reporter", t.villages[district][0])
    assert system.delete("/api/focalPoints/FPREGLEFT", token=reporter).status_code == 403
    assert system.delete("/api/focalPoints/NOSUCHFP").status_code == 404
    gone = system.delete("/api/focalPoints/FPREGLEFT")
    assert gone.status_code == 200 and gone.json()["retiredOn"] == today().isoformat(), gone.text
    again = system.delete("/api/focalPoints/FPREGLEFT")  # retired once, on the first day
    assert again.status_code == 200 and again.json()["retiredOn"] == gone.json()["retiredOn"]
    # listed nowhere but when asked for
    assert "FPREGLEFT" not in {f["code"] for f in system.get(f"/api/focalPoints?orgUnit={district}").json()["focalPoints"]}
    kept = system.get(f"/api/focalPoints?orgUnit={district}&includeRetired=true").json()["focalPoints"]
    assert [(f["code"], f["name"]) for f in kept if f["retiredOn"]] == [("FPREGLEFT", "ຜູ້ກວດກາເກົ່າ")]
    assert system.get("/api/focalPoints?includeRetired=maybe").status_code == 400
    assert unit(system, district)["focalPoints"] == []
    assert "FPREGLEFT" not in json.dumps(system.get("/api/metadata?focalPoints=true").json())
    assert system.post("/api/users", json={"username": "reg-left-user", "role": "supervisor", "orgUnit": district,
                                           "focalPoint": "FPREGLEFT"}).status_code == 400
    # a user linked before, or named like it, acts for it no more (its token rotated kept the link)
    rotated = system.post("/api/users", json={"username": "FPREGLEFT", "role": "supervisor", "orgUnit": district})
    assert rotated.status_code == 201 and rotated.json()["focalPoint"] is None, rotated.text
    # what waited for them is given up, saying why; nothing new is addressed to them
    listed = lambda: system.get("/api/notifications?recipient=FPREGLEFT").json()["notifications"]  # noqa: E731
    wait_until(lambda: {n["status"] for n in listed()} == {"FAILED"}, message="waiting alerts given up")
    assert all("retired on" in n["lastError"] for n in listed())
    # an operator's retry sends them nothing; one recorded before notify heard of it (a
    # check that read the focal point before) is given up as it would be sent
    r = system.post("/api/notifications/retry?recipient=FPREGLEFT")
    assert r.status_code == 200 and r.json() == {"retried": 0}, r.text
    one = listed()[0]
    with engine_for(settings.database_url).begin() as conn:
        # (due before every other alert waiting: the whole suite's are in the queue before it)
        conn.execute(sa.text("UPDATE notify.notification SET status = 'PENDING', last_error = NULL, "
                             "next_attempt_at = now() - interval '1 day' WHERE id = :id"), {"id": one["id"]})
    wait_until(lambda: next(n for n in listed() if n["id"] == one["id"])["status"] == "FAILED",
               timeout=60, message="given up as it would be sent")
    again_one = next(n for n in listed() if n["id"] == one["id"])
    assert again_one["attempts"] == one["attempts"] + 1 and "retired on" in again_one["lastError"]
    before = len(listed())
    assert system.post("/api/deadlines/check?asOf=2026-03-02").status_code == 200
    assert len(listed()) == before
    # named again, active again
    back = system.put("/api/focalPoints/FPREGLEFT", json={"email": "back@example.la"})
    assert back.status_code == 200 and back.json()["retiredOn"] is None, back.text
    assert [f["code"] for f in unit(system, district)["focalPoints"]] == ["FPREGLEFT"]


def test_a_supervisor_made_a_reporter_is_sent_no_alert_that_waited_for_them(system, world, settings):
    """A supervisor's role changed to reporter while their alerts waited (a relay down): the
    e-mails still went out to them (a probe), as only a retirement was asked about at send
    time. New alerts already left them out."""
    t, *_ = world
    _supervisor_with_alerts_waiting(system, settings, "FPREGROLE", "Role", t.districts[1], "en", "2026-03-03")
    r = system.put("/api/focalPoints/FPREGROLE", json={"role": "reporter"})
    assert r.status_code == 200, r.text
    with engine_for(settings.database_url).begin() as conn:
        # (due before every other alert waiting: the whole suite's are in the queue before them)
        conn.execute(sa.text("UPDATE notify.notification SET next_attempt_at = now() - interval '1 day' "
                             "WHERE recipient = 'FPREGROLE'"))
    listed = lambda: system.get("/api/notifications?recipient=FPREGROLE").json()["notifications"]  # noqa: E731
    wait_until(lambda: {n["status"] for n in listed()} == {"FAILED"}, timeout=60, message="given up as sent")
    assert all("is a reporter now" in n["lastError"] for n in listed()), listed()


def test_a_focal_point_fetched_edited_and_put_back_is_taken(system, world):
    """GET adds lastActiveAt and retiredOn, which no one sets: put back, they were a 400
    "Unknown field" (a probe); DHIS2 ignores read-only properties."""
    t, *_ = world
    system.import_metadata({"focalPoints": [{"code": "FPREGPUT", "name": "ຜູ້ລາຍງານ", "orgUnit": t.districts[0],
                                             "role": "reporter", "email": "put@example.la", "language": "lo"}]})
    fp = next(f for f in system.get(f"/api/focalPoints?orgUnit={t.districts[0]}").json()["focalPoints"]
              if f["code"] == "FPREGPUT")
    assert {"lastActiveAt", "retiredOn"} <= set(fp)
    r = system.put("/api/focalPoints/FPREGPUT", json={**fp, "email": "put.again@example.la"})
    assert r.status_code == 200 and r.json()["email"] == "put.again@example.la", r.text
    assert r.json()["retiredOn"] is None and r.json()["name"] == "ຜູ້ລາຍງານ"
