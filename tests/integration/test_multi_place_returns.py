"""One return that reports for several places: a district statistics centre's CSV of its
villages, months at once. Each (unit, period) it names counts as reported: completeness,
timeliness, the deadline check and each unit's lastSubmission, not only the place of its
first line (CONTRACT 4: a value's own period/orgUnit override the header's)."""
from __future__ import annotations

from shared.periods import today
from tests.support.builders import CSV_HEADER, tree, village_data_set

UID = "MPR"
YEAR = today().year - 1


def _monthly_district(system, uid: str, villages: int):
    """One district's villages reporting a monthly data set, a supervisor at the province:
    (codes, district, villages)."""
    t, units = tree(uid, districts=1, villages=villages)
    codes, doc = village_data_set(uid, period_type="Monthly", timely_days=10, rules=False)
    doc["orgUnits"] = units
    doc["focalPoints"] = [{"code": f"SUP{uid}", "name": "Supervisor", "orgUnit": t.province,
                           "role": "supervisor", "email": f"sup.{uid.lower()}@example.la", "language": "en"}]
    system.import_metadata(doc)
    (district,) = t.districts
    return codes, district, t.villages[district]


def test_a_return_of_several_villages_and_months_counts_for_each(system):
    codes, district, (v1, v2, v3) = _monthly_district(system, UID, 3)
    jan, feb = f"{YEAR}01", f"{YEAR}02"
    body = CSV_HEADER + "".join(f"{codes['hh']},{pe},{ou},,,{n},,,,\n"
                            for n, (ou, pe) in enumerate([(v1, jan), (v2, jan), (v2, feb)], start=4))
    r = system.submit(body, content_type="text/csv")
    assert r.status_code == 202, r.text
    status = system.wait_status(r.json()["id"])
    assert status["status"] == "AGGREGATED" and status["importCount"]["imported"] == 3
    assert (status["orgUnit"], status["period"]) == (v1, jan)  # the return is named by its first line

    def completeness(pe):
        c = system.get(f"/api/completeness?ds={codes['ds']}&ou={district}&pe={pe}").json()
        return c["expected"], c["actual"], c["onTime"]

    assert completeness(jan) == (3, 2, 0)  # v1 and v2; last year's: late
    assert completeness(feb) == (3, 1, 0)  # v2
    assert completeness(f"{YEAR}Q1") == (9, 3, 0)

    # each village's last submission: v2's is its latest period
    last = {ou: system.get(f"/api/orgUnits/{ou}").json()["lastSubmission"] for ou in (v1, v2, v3)}
    assert [(x["dataSet"], x["period"]) for x in last[v1]] == [(codes["ds"], jan)]
    assert [(x["dataSet"], x["period"]) for x in last[v2]] == [(codes["ds"], feb)]
    assert last[v3] == []

    # the deadline check chases only what did not come: v3 in January, v1 and v3 in February
    r = system.post(f"/api/deadlines/check?asOf={YEAR}-03-15")
    assert r.status_code == 200, r.text
    alerts = system.get(f"/api/notifications?recipient=SUP{UID}&type=LATE_RETURN").json()["notifications"]
    chased = {(n["orgUnit"], n["period"]) for n in alerts if n["period"] in (jan, feb)}
    assert chased == {(v3, jan), (v1, feb), (v3, feb)}  # (the look-back also finds last year's months)


def test_an_invalid_value_for_another_place_alerts_that_places_supervisors_about_it(system):
    """A district's return for one village carrying another village's bad month: the
    INVALID_RETURN is about that village and month, to its chain, not the header's."""
    uid = "MPI"
    t, units = tree(uid, districts=2, villages=1)
    codes, doc = village_data_set(uid, period_type="Monthly", timely_days=10)
    doc["orgUnits"] = units
    d1, d2 = t.districts
    (v1,), (v2,) = t.villages[d1], t.villages[d2]
    doc["focalPoints"] = [{"code": f"S{n}{uid}", "name": f"Supervisor {n}", "orgUnit": d, "role": "supervisor",
                           "email": f"s{n}.mpi@example.la", "language": "en"} for n, d in ((1, d1), (2, d2))]
    system.import_metadata(doc)
    jan, feb = f"{YEAR}01", f"{YEAR}02"
    r = system.submit({"dataSet": codes["ds"], "period": jan, "orgUnit": v1, "dataValues": [
        {"dataElement": codes["pop"], "categoryOptionCombo": "M", "value": "10"},
        {"dataElement": codes["pop"], "categoryOptionCombo": "F", "value": "12"},
        # v2's February, all zero: the HIGH rule (population positive) fails there
        {"dataElement": codes["pop"], "categoryOptionCombo": "M", "value": "0", "orgUnit": v2, "period": feb},
        {"dataElement": codes["pop"], "categoryOptionCombo": "F", "value": "0", "orgUnit": v2, "period": feb}]})
    assert r.status_code == 202, r.text
    assert system.wait_status(r.json()["id"])["status"] == "REJECTED"

    def invalid(recipient):
        return [(n["orgUnit"], n["period"]) for n in system.get(
            f"/api/notifications?recipient={recipient}&type=INVALID_RETURN").json()["notifications"]
            if n["channel"] == "email"]

    from tests.support.client import wait_until

    assert wait_until(lambda: invalid(f"S2{uid}"), message="v2's supervisor told") == [(v2, feb)]
    assert invalid(f"S1{uid}") == []  # v1's January was fine
    # validationResults: the violation goes to v2's subtree with the return, and to no one else
    sup1 = system.create_user(f"s1-{uid}", "supervisor", d1)
    sup2 = system.create_user(f"s2-{uid}", "supervisor", d2)
    seen2 = system.get(f"/api/validationResults?ou={d2}", token=sup2).json()["validationResults"]
    assert [(x["returnId"], [(v["orgUnit"], v["period"]) for v in x["violations"]]) for x in seen2] == [
        (r.json()["id"], [(v2, feb)])]
    assert system.get(f"/api/validationResults?ou={d2}&pe={feb}", token=sup2).json()["validationResults"]
    assert system.get(f"/api/validationResults?ou={d2}&pe={jan}", token=sup2).json()["validationResults"] == []
    # a year holds its months (and quarters): pe=YEAR lists the return of its February
    year = system.get(f"/api/validationResults?ou={d2}&pe={YEAR}", token=sup2).json()["validationResults"]
    assert [(x["returnId"], [(v["orgUnit"], v["period"]) for v in x["violations"]]) for x in year] == [
        (r.json()["id"], [(v2, feb)])]
    seen1 = system.get(f"/api/validationResults?ou={d1}", token=sup1).json()["validationResults"]
    assert [(x["returnId"], x["violations"]) for x in seen1] == [(r.json()["id"], [])]  # its own place, clean
    # and the return itself: each district reads it, with its own places' violations only
    mine2 = system.get(f"/api/submissions/{r.json()['id']}", token=sup2)
    assert mine2.status_code == 200, mine2.text
    assert [(v["orgUnit"], v["period"]) for v in mine2.json()["violations"]] == [(v2, feb)]
    mine1 = system.get(f"/api/submissions/{r.json()['id']}", token=sup1).json()
    assert mine1["status"] == "REJECTED" and mine1["violations"] == []


def test_a_header_no_value_names_is_not_reported(system):
    """A return headed by one village whose values are all another's reports for that other
    one only: the header's village does not count as reported (it had made it count, on
    time, and kept its late alert from going out), yet the return is still its sender's to
    read back."""
    uid = "MPH"
    t, units = tree(uid, districts=1, villages=2)
    codes, doc = village_data_set(uid, period_type="Monthly", timely_days=10, rules=False)
    doc["orgUnits"] = units
    system.import_metadata(doc)
    (district,) = t.districts
    v1, v2 = t.villages[district]
    month = f"{YEAR}03"
    reporter = system.create_user(f"rep-{uid}", "reporter", district)
    r = system.submit({"dataSet": codes["ds"], "period": month, "orgUnit": v2, "dataValues": [
        {"dataElement": codes["hh"], "value": "7", "orgUnit": v1}]}, token=reporter)
    assert r.status_code == 202, r.text
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    c = system.get(f"/api/completeness?ds={codes['ds']}&ou={district}&pe={month}").json()
    assert {x["orgUnit"]: x["actual"] for x in c["children"]} == {v1: 1, v2: 0}
    assert c["actual"] == 1
    assert system.get(f"/api/orgUnits/{v2}").json()["lastSubmission"] == []
    assert system.get(f"/api/submissions/{r.json()['id']}", token=reporter).status_code == 200
