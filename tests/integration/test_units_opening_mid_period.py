"""A village that opens during a period is open in it: intake takes its return, so
completeness expects it and the deadline check chases it, where it sat at its opening
(it has no place at the period's start)."""
from __future__ import annotations


from shared.periods import today
from tests.support.builders import tree, village_data_set

UID = "MID"
YEAR = today().year - 1


def test_a_unit_opening_mid_month_is_expected_that_month(system):
    t, units = tree(UID, districts=1, villages=2)
    (district,) = t.districts
    new = f"VN{UID}"
    units.append({"code": new, "name": "New village", "nameLo": "ບ້ານໃໝ່", "parent": district,
                  "openingDate": f"{YEAR}-01-15"})
    codes, doc = village_data_set(UID, period_type="Monthly", timely_days=10, rules=False)
    doc["orgUnits"] = units
    doc["focalPoints"] = [{"code": f"SUP{UID}", "name": "Supervisor", "orgUnit": district,
                           "role": "supervisor", "email": "sup.mid@example.la", "language": "en"}]
    system.import_metadata(doc)

    def completeness(pe):
        c = system.get(f"/api/completeness?ds={codes['ds']}&ou={district}&pe={pe}").json()
        return c["expected"], c["actual"]

    assert completeness(f"{YEAR - 1}12") == (2, 0)  # not open yet
    assert completeness(f"{YEAR}01") == (3, 0)
    r = system.submit({"dataSet": codes["ds"], "period": f"{YEAR}01", "orgUnit": new,
                       "dataValues": [{"dataElement": codes["hh"], "value": "3"}]})
    assert r.status_code == 202, r.text
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    assert completeness(f"{YEAR}01") == (3, 1)
    children = system.get(f"/api/completeness?ds={codes['ds']}&ou={t.province}&pe={YEAR}01").json()["children"]
    assert [(c["orgUnit"], c["expected"], c["actual"]) for c in children] == [(district, 3, 1)]

    # January is late at the two old villages, not at the new one, which reported
    r = system.post(f"/api/deadlines/check?asOf={YEAR}-02-15")
    assert r.status_code == 200, r.text
    alerts = system.get(f"/api/notifications?recipient=SUP{UID}&type=LATE_RETURN").json()["notifications"]
    assert {n["orgUnit"] for n in alerts if n["period"] == f"{YEAR}01"} == set(t.villages[district])
