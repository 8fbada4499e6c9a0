"""Alerts about a village that moved to another district, listed by each district: the
months it was the old district's stay the old district's to read, its reporter's
reminders included (listed by the reporter's current place, neither district saw them)."""
from __future__ import annotations

import pytest

from tests.support.builders import tree

UID = "NMV"
DS = f"M{UID}"


@pytest.fixture(scope="module")
def world(system, mailbox):
    t, units = tree(UID, districts=2, villages=1, opening="2025-06-01")  # June is its first month
    d1, d2 = t.districts
    village = t.villages[d1][0]
    system.import_metadata({
        "orgUnits": units,
        "dataElements": [{"code": f"E{UID}", "name": "Cases", "valueType": "INTEGER", "aggregationType": "SUM"}],
        "dataSets": [{"code": DS, "name": "Monthly", "periodType": "Monthly", "dataElements": [f"E{UID}"],
                      "orgUnitLevel": 4, "timelyDays": 10}],
        "focalPoints": [
            {"code": f"REP{UID}", "name": "Reporter", "orgUnit": village, "role": "reporter", "email": "r@example.la"},
            {"code": f"S1{UID}", "name": "Supervisor 1", "orgUnit": d1, "role": "supervisor", "email": "s1@example.la"},
            {"code": f"S2{UID}", "name": "Supervisor 2", "orgUnit": d2, "role": "supervisor", "email": "s2@example.la"},
        ]})
    # the village is D2's from July
    system.import_metadata({"orgUnits": [{"code": village, "name": "Village", "parent": d2,
                                          "parentFrom": "2025-07-01", "openingDate": "2025-06-01"}]})
    # reminders before June's and July's deadlines, and the late alerts after them
    for day in ("2025-06-28", "2025-07-12", "2025-07-29", "2025-08-12"):
        assert system.post(f"/api/deadlines/check?asOf={day}").status_code == 200
    return t, village


def listed(system, token, query=""):
    r = system.get(f"/api/notifications?channel=email{query}", token=token)
    assert r.status_code == 200, r.text
    return sorted((n["type"], n["recipient"], n["period"]) for n in r.json()["notifications"])


def test_each_district_reads_the_alerts_of_the_months_the_village_was_its(system, world):
    t, village = world
    d1, d2 = t.districts
    every = listed(system, None, f"&orgUnit={village}")
    assert every == [("LATE_RETURN", f"S1{UID}", "202506"), ("LATE_RETURN", f"S2{UID}", "202507"),
                     ("REMINDER", f"REP{UID}", "202506"), ("REMINDER", f"REP{UID}", "202507")]
    sup1 = system.create_user(f"u1{UID}", "supervisor", d1)
    sup2 = system.create_user(f"u2{UID}", "supervisor", d2)
    # (D2's own village has its alerts too: about the moved one)
    assert listed(system, sup1, f"&orgUnit={village}") == [("LATE_RETURN", f"S1{UID}", "202506"), ("REMINDER", f"REP{UID}", "202506")]
    assert listed(system, sup2, f"&orgUnit={village}") == [("LATE_RETURN", f"S2{UID}", "202507"), ("REMINDER", f"REP{UID}", "202507")]
    # and by the reporter, whom the old district may ask about (it was a 403)
    assert listed(system, sup1, f"&recipient=REP{UID}") == [("REMINDER", f"REP{UID}", "202506")]
    assert listed(system, sup2, f"&recipient=REP{UID}") == [("REMINDER", f"REP{UID}", "202507")]
    # a neighbour that never held the village still may not
    r = system.get(f"/api/notifications?recipient=S2{UID}", token=sup1)
    assert r.status_code == 403, r.text
