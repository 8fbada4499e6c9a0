"""GET /api/dataValueSets: the stored values read back as DHIS2 exports them, with their
comments (Lao included), sender and last change in Asia/Vientiane, in scope, and a CSV
that can be sent back as a return."""
from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from tests.support.builders import tree, village_data_set

UID = "DVX"


@pytest.fixture(scope="module")
def world(system):
    t, units = tree(UID, districts=2, villages=2)
    codes, doc = village_data_set(UID, period_type="Monthly", rules=False)
    doc["orgUnits"] = units
    system.import_metadata(doc)
    (v11, v12), (v21, _) = t.villages[t.districts[0]], t.villages[t.districts[1]]
    reporter = system.create_user(f"rep-{UID}", "reporter", t.districts[0])
    pop, hh = codes["pop"], codes["hh"]

    def send(unit, period, values, token=None):
        r = system.submit({"dataSet": codes["ds"], "period": period, "orgUnit": unit, "dataValues": values},
                          token=token)
        assert r.status_code == 202, r.text
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"

    send(v11, "202401", [{"dataElement": pop, "categoryOptionCombo": "M", "value": "10", "comment": "ນັບຄືນ ໃໝ່"},
                         {"dataElement": pop, "categoryOptionCombo": "F", "value": "12"},
                         {"dataElement": hh, "value": "4"}], reporter)
    # the next month, then corrected: households deleted, F changed
    send(v11, "202402", [{"dataElement": pop, "categoryOptionCombo": "M", "value": "11"},
                         {"dataElement": pop, "categoryOptionCombo": "F", "value": "12"},
                         {"dataElement": hh, "value": "5"}], reporter)
    send(v11, "202402", [{"dataElement": pop, "categoryOptionCombo": "F", "value": "13"},
                         {"dataElement": hh, "value": ""}], reporter)
    send(v21, "202401", [{"dataElement": pop, "categoryOptionCombo": "M", "value": "7"}])
    return t, codes, reporter, (v11, v12, v21)


def _get(system, query, token=None, fmt=""):
    return system.get(f"/api/dataValueSets{fmt}?{query}", token=token)


def test_one_units_period_is_read_back_with_comment_sender_and_local_time(system, world):
    t, codes, _, (v11, *_) = world
    r = _get(system, f"dataSet={codes['ds']}&period=202401&orgUnit={v11}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["dataSet"], body["period"], body["orgUnit"]) == (codes["ds"], "202401", v11)
    got = {(v["dataElement"], v["categoryOptionCombo"]): v for v in body["dataValues"]}
    assert {k: v["value"] for k, v in got.items()} == {
        (codes["pop"], "M"): "10", (codes["pop"], "F"): "12", (codes["hh"], "default"): "4"}
    male = got[(codes["pop"], "M")]
    assert male["comment"] == "ນັບຄືນ ໃໝ່" and male["storedBy"] == f"rep-{UID}"
    assert male["lastUpdated"].endswith("+07:00") and male["followup"] is False
    assert got[(codes["hh"], "default")]["comment"] is None


def test_a_subtree_over_dates_holds_the_latest_values_and_deleted_ones_on_request(system, world):
    t, codes, _, (v11, v12, v21) = world
    query = f"dataSet={codes['ds']}&orgUnit={t.province}&children=true&startDate=2024-01-01&endDate=2024-02-29"
    values = _get(system, query).json()["dataValues"]
    assert [(v["orgUnit"], v["period"], v["dataElement"], v["categoryOptionCombo"], v["value"]) for v in values] == [
        (v11, "202401", codes["hh"], "default", "4"),
        (v11, "202401", codes["pop"], "F", "12"), (v11, "202401", codes["pop"], "M", "10"),
        (v11, "202402", codes["pop"], "F", "13"), (v11, "202402", codes["pop"], "M", "11"),
        (v21, "202401", codes["pop"], "M", "7")]
    assert "orgUnit" not in _get(system, query).json()  # a subtree, not one unit
    deleted = [v for v in _get(system, query + "&includeDeleted=true").json()["dataValues"] if v["deleted"]]
    assert [(v["orgUnit"], v["period"], v["dataElement"], v["value"]) for v in deleted] == [
        (v11, "202402", codes["hh"], "")]
    # DHIS2 repeats a parameter per item; a list split by commas reads the same
    repeated = _get(system, f"dataSet={codes['ds']}&period=202401&period=202402&orgUnit={v11}&orgUnit={v21}")
    listed = _get(system, f"dataSet={codes['ds']}&period=202401,202402&orgUnit={v11};{v21}")
    assert repeated.json()["dataValues"] == listed.json()["dataValues"] == values
    # nothing for a unit that sent nothing
    assert _get(system, f"dataSet={codes['ds']}&period=202401&orgUnit={v12}").json()["dataValues"] == []


def test_the_csv_export_goes_back_in_as_a_return(system, world):
    t, codes, reporter, (v11, *_) = world
    r = _get(system, f"dataSet={codes['ds']}&period=202401&orgUnit={v11}", fmt=".csv")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {(x["dataelement"], x["categoryoptioncombo"], x["value"], x["comment"]) for x in rows} == {
        (codes["pop"], "M", "10", "ນັບຄືນ ໃໝ່"), (codes["pop"], "F", "12", ""), (codes["hh"], "default", "4", "")}
    back = system.submit(r.text.encode("utf-8"), token=reporter, content_type="text/csv")
    assert back.status_code == 202, back.text
    done = system.wait_status(back.json()["id"])
    assert done["status"] == "AGGREGATED" and done["dataSet"] == codes["ds"]
    again = _get(system, f"dataSet={codes['ds']}&period=202401&orgUnit={v11}").json()["dataValues"]
    assert sorted((v["dataElement"], v["categoryOptionCombo"], v["value"], v["comment"]) for v in again) == sorted(
        (x["dataelement"], x["categoryoptioncombo"], x["value"], x["comment"] or None) for x in rows)


def test_scope_and_bad_parameters(system, world):
    t, codes, reporter, (v11, _, v21) = world
    assert _get(system, f"dataSet={codes['ds']}&period=202401&orgUnit={v11}", token=reporter).status_code == 200
    r = _get(system, f"dataSet={codes['ds']}&period=202401&orgUnit={v21}", token=reporter)
    assert r.status_code == 403 and v21 in r.json()["message"]
    assert system.get(f"/api/dataValueSets?dataSet={codes['ds']}&period=202401&orgUnit={v11}",
                      token="nobody").status_code == 401
    r = _get(system, "orgUnit=NOWHERE&period=2024-13&startDate=2024-01-01&children=maybe")
    message = r.json()["message"]
    assert r.status_code == 400
    for part in ("dataSet is required", "'NOWHERE'", "'2024-13'", "not both", "children: 'maybe'"):
        assert part in message, (part, message)
    r = _get(system, f"dataSet={codes['ds']}&orgUnit={v11}&startDate=2024-03-01&endDate=2024-01-31")
    assert r.status_code == 400 and "after endDate" in r.json()["message"]
    for query, words in (("startDate=2026-13-01&endDate=2026-12-31", "startDate: '2026-13-01'"),
                         ("startDate=2024-01-01&endDate=x", "endDate: 'x'"),
                         ("startDate=2024-01-01", "go together"),
                         ("lastUpdated=2024-02-30", "lastUpdated: '2024-02-30'"),
                         ("period=202401&format=xml", "unknown parameter(s) format"),
                         ("period=202401&idScheme=UID", "idScheme 'UID'")):
        r = _get(system, f"dataSet={codes['ds']}&orgUnit={v11}&{query}")
        assert r.status_code == 400 and words in r.json()["message"], (query, r.text)


def test_dhis2_sync_habits_everything_since_1900_and_changes_since_an_instant(system, world):
    t, codes, _, (v11, *_) = world
    everything = _get(system, f"dataSet={codes['ds']}&orgUnit={t.country}&children=true"
                              "&startDate=1900-01-01&endDate=9999-12-31")
    assert everything.status_code == 200 and len(everything.json()["dataValues"]) >= 6, everything.text
    newest = max(v["lastUpdated"] for v in everything.json()["dataValues"])
    since = _get(system, f"dataSet={codes['ds']}&orgUnit={t.country}&children=true&lastUpdated={newest}")
    assert since.status_code == 200, since.text
    assert {v["lastUpdated"] for v in since.json()["dataValues"]} == {newest}
    # the same instant in UTC, and a day without an offset read in Asia/Vientiane
    utc = dt.datetime.fromisoformat(newest).astimezone(dt.timezone.utc).isoformat()
    assert _get(system, f"dataSet={codes['ds']}&orgUnit={t.country}&children=true&lastUpdated={utc.replace('+', '%2B')}"
                ).json() == since.json()
    # an offset PostgreSQL takes no more (beyond 15:59) is Python's to convert
    far = _get(system, f"dataSet={codes['ds']}&orgUnit={t.country}&children=true&lastUpdated=2020-01-01T00:00:00%2B16:00")
    assert far.status_code == 200 and len(far.json()["dataValues"]) == len(everything.json()["dataValues"]), far.text
    deleted = _get(system, f"dataSet={codes['ds']}&orgUnit={v11}&period=202402&includeDeleted=true", fmt=".csv")
    rows = list(csv.DictReader(io.StringIO(deleted.text)))
    assert {(x["dataelement"], x["deleted"]) for x in rows} == {
        (codes["pop"], "false"), (codes["hh"], "true")}


def test_text_values_are_read_back_and_a_dry_run_counts_them_as_the_return_will(system, world):
    """Validation holds no text values, and a dry run counted a text value sent again as
    imported where its return said updated (and a deletion of one as ignored)."""
    t, codes, reporter, (v11, v12, _) = world
    note = f"NOTE{UID}"
    system.import_metadata({"dataElements": [{"code": note, "name": "Note", "valueType": "TEXT",
                                              "aggregationType": "NONE"}],
                            "dataSets": [{"code": codes["ds"], "dataElements": [codes["pop"], codes["hh"], note]}]})
    body = {"dataSet": codes["ds"], "period": "202403", "orgUnit": v12,
            "dataValues": [{"dataElement": note, "value": "ນ້ຳຖ້ວມ ບ້ານ"}]}
    for sent, expected in ((body, {"imported": 1, "updated": 0, "ignored": 0, "deleted": 0}),
                           ({**body, "dataValues": [{"dataElement": note, "value": "ແລ້ງ"}]},
                            {"imported": 0, "updated": 1, "ignored": 0, "deleted": 0}),
                           ({**body, "dataValues": [{"dataElement": note, "value": ""}]},
                            {"imported": 0, "updated": 0, "ignored": 0, "deleted": 1})):
        dry = system.post("/api/dataValueSets?dryRun=true", json=sent, token=reporter)
        assert dry.status_code == 200 and dry.json()["importCount"] == expected, (sent, dry.text)
        done = system.wait_status(system.submit(sent, token=reporter).json()["id"])
        assert done["importCount"] == expected, done
        if sent["dataValues"][0]["value"]:
            got = _get(system, f"dataSet={codes['ds']}&period=202403&orgUnit={v12}").json()["dataValues"]
            assert [(v["dataElement"], v["value"]) for v in got] == [(note, sent["dataValues"][0]["value"])]


def test_a_json_export_of_several_units_goes_back_in_as_one_return(system, world):
    t, codes, _, (v11, _, v21) = world
    exported = _get(system, f"dataSet={codes['ds']}&orgUnit={t.province}&children=true&period=202401").json()
    assert "orgUnit" not in exported and {v["orgUnit"] for v in exported["dataValues"]} == {v11, v21}
    r = system.submit(exported)
    assert r.status_code == 202, r.text
    done = system.wait_status(r.json()["id"])
    assert done["status"] == "AGGREGATED" and done["importCount"]["updated"] == len(exported["dataValues"]), done
    again = _get(system, f"dataSet={codes['ds']}&orgUnit={t.province}&children=true&period=202401").json()
    assert [(v["orgUnit"], v["dataElement"], v["categoryOptionCombo"], v["value"]) for v in again["dataValues"]] == \
        [(v["orgUnit"], v["dataElement"], v["categoryOptionCombo"], v["value"]) for v in exported["dataValues"]]


def test_an_export_by_last_update_gives_a_moved_village_to_each_district_for_its_own_months(system, world):
    """With no period a scoped reader's export read every path the unit ever held: a village
    moved in gave the new district its months under the old one, and the old district was
    refused the months it holds."""
    t, codes, reporter, (_, v12, _) = world
    d1, d2 = t.districts[0], t.districts[1]
    other = system.create_user(f"rep2-{UID}", "reporter", d2)
    for period, value in (("202301", "31"), ("202302", "32")):
        r = system.submit({"dataSet": codes["ds"], "period": period, "orgUnit": v12,
                           "dataValues": [{"dataElement": codes["hh"], "value": value}]})
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
        if period == "202301":  # the village goes to the other district from February
            system.import_metadata({"orgUnits": [{"code": v12, "parent": d2, "parentFrom": "2023-02-01"}]})
    since = f"dataSet={codes['ds']}&orgUnit={v12}&lastUpdated=2000-01-01"
    for token, months in ((other, {"202302"}), (reporter, {"202301"}), (None, {"202301", "202302"})):
        r = _get(system, since, token=token)
        assert r.status_code == 200, r.text
        assert {v["period"] for v in r.json()["dataValues"]} == months
        csv_rows = list(csv.DictReader(io.StringIO(_get(system, since, token=token, fmt=".csv").text)))
        assert {x["period"] for x in csv_rows} == months
    # the old district's subtree, children included, holds the village's January and no more
    r = _get(system, f"dataSet={codes['ds']}&orgUnit={d1}&children=true&lastUpdated=2000-01-01", token=reporter)
    assert {(v["orgUnit"], v["period"]) for v in r.json()["dataValues"] if v["orgUnit"] == v12} == {(v12, "202301")}
    # a unit never in the subtree is refused as before
    r = _get(system, f"dataSet={codes['ds']}&orgUnit={t.villages[d2][1]}"
                     "&lastUpdated=2000-01-01", token=reporter)
    assert r.status_code == 403


def test_a_values_stored_by_is_kept_as_sent_and_an_export_sent_back_keeps_it(system, world):
    """storedBy in an import was ignored (every value was the sender's), so an export sent back
    by an admin rewrote who each value came from; DHIS2 keeps a value's storedBy, else the
    user's, as history loads here already did."""
    t, codes, reporter, (v11, _, v21) = world
    body = {"dataSet": codes["ds"], "period": "202405", "orgUnit": v21, "dataValues": [
        {"dataElement": codes["pop"], "categoryOptionCombo": "M", "value": "3", "storedBy": " ລະບົບ-ເມືອງ "},
        {"dataElement": codes["pop"], "categoryOptionCombo": "F", "value": "4", "storedBy": "  "},
        {"dataElement": codes["hh"], "value": "1"}]}
    r = system.submit(body)
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    got = {v["categoryOptionCombo"]: v["storedBy"]
           for v in _get(system, f"dataSet={codes['ds']}&period=202405&orgUnit={v21}").json()["dataValues"]}
    assert got == {"M": "ລະບົບ-ເມືອງ", "F": "admin", "default": "admin"}
    # a reporter's values exported and sent back by the admin (CSV) are still the reporter's
    exported = _get(system, f"dataSet={codes['ds']}&period=202401&orgUnit={v11}", fmt=".csv").text
    back = system.submit(exported.encode("utf-8"), content_type="text/csv")
    assert system.wait_status(back.json()["id"])["status"] == "AGGREGATED"
    again = _get(system, f"dataSet={codes['ds']}&period=202401&orgUnit={v11}").json()["dataValues"]
    assert {v["storedBy"] for v in again} == {f"rep-{UID}"}
    bad = system.submit({**body, "dataValues": [{**body["dataValues"][0], "storedBy": 7}]})
    assert bad.status_code == 400 and bad.json()["conflicts"][0]["object"] == "dataValues[0].storedBy", bad.text


def test_a_values_followup_mark_is_kept_and_exported_and_an_export_sent_back_keeps_it(system, world):
    """DHIS2's followup (a value marked for a data-quality check) was read, dropped, and
    exported as false: a DHIS2 export sent here and back lost its marks."""
    t, codes, _, (v11, v12, v21) = world
    body = {"dataSet": codes["ds"], "period": "202406", "orgUnit": v12, "dataValues": [
        {"dataElement": codes["pop"], "categoryOptionCombo": "M", "value": "30", "followup": True},
        {"dataElement": codes["pop"], "categoryOptionCombo": "F", "value": "31", "followup": False},
        {"dataElement": codes["hh"], "value": "9"}]}
    assert system.wait_status(system.submit(body).json()["id"])["status"] == "AGGREGATED"
    query = f"dataSet={codes['ds']}&period=202406&orgUnit={v12}"
    marks = {v["categoryOptionCombo"]: v["followup"] for v in _get(system, query).json()["dataValues"]}
    assert marks == {"M": True, "F": False, "default": False}
    exported = _get(system, query, fmt=".csv").text
    assert sorted(line.rsplit(",", 1)[1] for line in exported.splitlines()[1:]) == ["false", "false", "true"]
    # sent back as CSV with the mark moved: the export's marks are what is kept
    lines = exported.replace(",true\n", ",false\n").splitlines()
    lines = [lines[0]] + [(line.rsplit(",", 1)[0] + ",TRUE") if line.startswith(codes["hh"]) else line
                          for line in lines[1:]]
    back = system.submit(("\n".join(lines) + "\n").encode("utf-8"), content_type="text/csv")
    assert system.wait_status(back.json()["id"])["status"] == "AGGREGATED", back.text
    marks = {v["categoryOptionCombo"]: v["followup"] for v in _get(system, query).json()["dataValues"]}
    assert marks == {"M": False, "F": False, "default": True}
    for bad in ("yes", 1, None):
        r = system.submit({**body, "dataValues": [{**body["dataValues"][0], "followup": bad}]})
        if bad is None:  # (null: not marked, as DHIS2 reads it)
            assert r.status_code == 202, r.text
            continue
        assert r.status_code == 400 and r.json()["conflicts"][0]["object"] == "dataValues[0].followup", r.text


def test_a_data_sets_export_holds_its_units_values_and_goes_back_in(system, world):
    """An element two data sets share has values at the other's units: exported by this data
    set's name (the JSON header), the export could not be sent back (intake refused the
    units not assigned it) while its CSV went back under the other data set."""
    t, codes, _, (v11, _, v21) = world
    special = f"SPECIAL{UID}"
    system.import_metadata({"dataSets": [{"code": special, "name": "Special", "periodType": "Monthly",
                                          "dataElements": [codes["hh"]], "orgUnits": [v21]}]})
    r = system.submit({"dataSet": special, "period": "202406", "orgUnit": v21,
                       "dataValues": [{"dataElement": codes["hh"], "value": "6"}]})
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    query = f"dataSet={special}&orgUnit={t.country}&children=true&startDate=2024-01-01&endDate=2024-12-31"
    exported = _get(system, query).json()
    assert {(v["orgUnit"], v["period"]) for v in exported["dataValues"]} == {(v21, "202405"), (v21, "202406")}
    # v11's households (sent with the village data set, at a unit this one is not assigned) stay out
    assert all(v["orgUnit"] != v11 for v in exported["dataValues"])
    back = system.submit(exported)
    assert back.status_code == 202, back.text
    assert system.wait_status(back.json()["id"])["status"] == "AGGREGATED"
    # the village data set's own export still holds them
    village = _get(system, f"dataSet={codes['ds']}&orgUnit={v11}&period=202401").json()["dataValues"]
    assert codes["hh"] in {v["dataElement"] for v in village}
