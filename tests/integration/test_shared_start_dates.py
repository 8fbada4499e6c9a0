"""An element in a monthly and a quarterly data set: January and the first quarter begin
on the same day and are still two periods in the year's figures (the yearly rebuild once
took them as one: AVERAGE counted a period too few, LAST added the two)."""
from __future__ import annotations


import pytest

from shared.periods import today
from tests.support.builders import tree

UID = "SSD"
YEAR = today().year - 1
AVG, ASO, LST = f"AVG{UID}", f"ASO{UID}", f"LST{UID}"


@pytest.fixture(scope="module")
def world(system):
    t, units = tree(UID, districts=1, villages=2)
    elements = [{"code": c, "name": c, "valueType": "INTEGER", "aggregationType": a, "disaggregation": ["M", "F"]}
                for c, a in ((AVG, "AVERAGE"), (ASO, "AVERAGE_SUM_ORG_UNIT"), (LST, "LAST"))]
    data_sets = [{"code": f"{p}{UID}", "name": f"{p} {UID}", "periodType": p, "dataElements": [AVG, ASO, LST],
                  "orgUnitLevel": 4, "timelyDays": 10} for p in ("Monthly", "Quarterly", "Yearly")]
    system.import_metadata({"orgUnits": units, "dataElements": elements, "dataSets": data_sets})
    return t


def send(system, period_type: str, period: str, village: str, values: dict) -> None:
    r = system.submit({"dataSet": f"{period_type}{UID}", "period": period, "orgUnit": village, "dataValues": [
        {"dataElement": de, "categoryOptionCombo": combo, "value": str(v)}
        for de, (m, f) in values.items() for combo, v in (("M", m), ("F", f))]})
    assert r.status_code == 202, r.text
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"


def test_a_month_and_a_quarter_beginning_together_are_two_periods_of_the_year(system, world):
    t = world
    village = t.all_villages[0]
    send(system, "Monthly", f"{YEAR}01", village, {AVG: (4, 6), ASO: (4, 6), LST: (4, 6)})      # totals 10
    send(system, "Quarterly", f"{YEAR}Q1", village, {AVG: (15, 25), ASO: (15, 25), LST: (15, 25)})  # 40
    year = {k[0]: v for k, v in system.analytics(f"{AVG};{AVG}.M;{ASO};{LST};{LST}.M", village, str(YEAR)).items()}
    # two periods: (10 + 40) / 2, for the total as for a combo ((4 + 15) / 2)
    assert year[AVG] == 25 and year[f"{AVG}.M"] == 9.5
    assert year[ASO] == 25
    # LAST: one of the two periods' values (they begin together), never their sum
    assert year[LST] in (10, 40) and year[f"{LST}.M"] in (4, 15)
    district = {k[0]: v for k, v in system.analytics(f"{AVG};{ASO}", t.districts[0], str(YEAR)).items()}
    assert district == {AVG: 25, ASO: 25}


def test_a_year_sent_as_a_year_beside_its_months_is_one_more_period_of_each_unit(system, world):
    """The year's own value and its months' summary are two rows of one unit for the asked
    year: worked out per unit before they are summed (a unit's rows are taken as they
    are only where it has one)."""
    t = world
    village = t.all_villages[1]
    send(system, "Yearly", str(YEAR), village, {ASO: (30, 30), LST: (30, 30)})           # 60
    send(system, "Monthly", f"{YEAR}01", village, {ASO: (1, 2), LST: (1, 2)})           # 3
    send(system, "Monthly", f"{YEAR}06", village, {ASO: (5, 7), LST: (5, 7)})           # 12
    own = {k[0]: v for k, v in system.analytics(f"{ASO};{LST};{LST}.M", village, str(YEAR)).items()}
    # three periods of the unit: the year, January, June; June is the latest
    assert own == {ASO: 25, LST: 12, f"{LST}.M": 5}
    first = {k[0]: v for k, v in system.analytics(f"{ASO};{LST}", t.all_villages[0], str(YEAR)).items()}
    for ou in (t.districts[0], t.province):
        above = {k[0]: v for k, v in system.analytics(f"{ASO};{LST}", ou, str(YEAR)).items()}
        assert above == {ASO: own[ASO] + first[ASO], LST: own[LST] + first[LST]}, ou
