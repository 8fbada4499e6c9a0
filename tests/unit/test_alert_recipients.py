"""Who is alerted about a unit (CONTRACT 7), as of the period the alert is about."""
import dataclasses
import datetime as dt

from services.notify.alerts import supervisors
from shared.replica import UnitPath
from tests.support.metadata import focal_point, snapshot

MOVED = dt.date(2026, 10, 1)


def moved_village():
    md = snapshot({"LA": None, "D1": "LA", "D2": "LA", "V": "D1"},
                  focal_points=[focal_point("S1", "D1"), focal_point("S2", "D2"), focal_point("SLA", "LA"),
                                focal_point("R", "V", role="reporter")])
    old, = md.org_units["V"].paths
    md.org_units["V"] = dataclasses.replace(md.org_units["V"], paths=(
        UnitPath(old.path, old.level, old.valid_from, MOVED), UnitPath("/LA/D2/V/", 3, MOVED, None)))
    return md


def test_supervisors_are_those_of_where_the_unit_sat_in_the_period():
    md = moved_village()
    # September's data stay in D1's totals: D1's supervisor answers for them, as the
    # deadline check has it; October's are D2's
    assert [fp.code for fp in supervisors(md, "V", "202609")] == ["S1", "SLA"]
    assert [fp.code for fp in supervisors(md, "V", "202610")] == ["S2", "SLA"]
    assert [fp.code for fp in supervisors(md, "V")] == ["S2", "SLA"]  # no period: where it is today
