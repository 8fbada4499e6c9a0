"""A return sent in time is not late while it waits for validation (CONTRACT 7: LATE_RETURN
only with no accepted return by due date + timelyDays). Notify hears of a return once it
is accepted; a deadline check run while validation is behind (down at midnight, a rush on
the last day) used to alert its supervisors, for good: an alert is sent once, and never
taken back. Measured with validation really not running, then started."""
from __future__ import annotations

import datetime as dt

import pytest

from shared.periods import Period, today
from tests.conftest import free_port
from tests.support.builders import CSV_HEADER, tree, village_data_set, village_return
from tests.support.processes import StatnetProcess

pytestmark = pytest.mark.e2e

UID = "LWV"


def late_units(api, recipient: str, period: str) -> set[str]:
    r = api.get(f"/api/notifications?recipient={recipient}&type=LATE_RETURN")
    assert r.status_code == 200, r.text
    return {n["orgUnit"] for n in r.json()["notifications"] if n["period"] == period}


def test_a_return_waiting_for_validation_is_not_late_and_a_rejected_one_is(settings):
    """... and each place of a district's return of its villages, not only its first line's
    (the return is named by it: the other villages were alerted as late while it waited)."""
    t, units = tree(UID, districts=1, villages=5, opening="2020-01-01")
    codes, doc = village_data_set(UID, period_type="Monthly", timely_days=60)
    supervisor = f"SUP{UID}"
    doc.update(orgUnits=units, focalPoints=[{"code": supervisor, "name": "Supervisor", "orgUnit": t.province,
                                             "role": "supervisor", "email": "sup@example.la", "language": "en"}])
    accepted, rejected, first, second, silent = t.all_villages
    period = Period.containing("Monthly", today()).previous()
    after_deadline = (period.end + dt.timedelta(days=61)).isoformat()
    front = StatnetProcess(settings, services=("gateway", "registry", "submission", "aggregation", "notify"),
                           name="without-validation").start()
    validation = StatnetProcess(settings, services=("validation",), name="validation")
    try:
        api = front.api
        api.import_metadata(doc)
        sent = {unit: api.submit(village_return(codes, unit, period.code, males, 5))
                for unit, males in ((accepted, 5), (rejected, -5))}  # -5 + 5 > 0 fails (HIGH)
        sent["district"] = api.submit(CSV_HEADER + "".join(
            f"{codes['pop']},{period.code},{unit},{sex},,{n},,,,\n"
            for unit in (first, second) for sex, n in (("M", 3), ("F", 4))), content_type="text/csv")
        assert all(r.status_code == 202 for r in sent.values()), [r.text for r in sent.values()]
        r = api.post(f"/api/deadlines/check?asOf={after_deadline}")
        assert r.status_code == 200, r.text
        assert late_units(api, supervisor, period.code) == {silent}  # both returns are on their way

        validation.start()
        assert api.wait_status(sent[accepted].json()["id"], timeout=120)["status"] == "AGGREGATED"
        assert api.wait_status(sent[rejected].json()["id"], timeout=120)["status"] == "REJECTED"
        assert api.wait_status(sent["district"].json()["id"], timeout=120)["status"] == "AGGREGATED"
        r = api.post(f"/api/deadlines/check?asOf={after_deadline}")
        assert r.status_code == 200, r.text
        # judged now: the rejected one is no return, and its unit is late after all
        assert late_units(api, supervisor, period.code) == {silent, rejected}
    finally:
        validation.close()
        front.close()


def test_without_the_submission_service_the_check_is_a_503_and_alerts_nobody(settings):
    """Nobody can say then whether a missing return is on its way: the check records nothing
    and says so (it was a 500, "internal error: RemoteError")."""
    t, units = tree(f"{UID}S", districts=1, villages=2, opening="2020-01-01")
    codes, doc = village_data_set(f"{UID}S", period_type="Monthly", timely_days=5, rules=False)
    supervisor = f"SUP{UID}S"
    doc.update(orgUnits=units, focalPoints=[{"code": supervisor, "name": "Supervisor", "orgUnit": t.province,
                                             "role": "supervisor", "email": "sup@example.la", "language": "en"}])
    # notify apart from the gateway, as in production: its refusal crosses the broker
    edge = StatnetProcess(settings, services=("gateway", "registry"), name="edge",
                          http_address=f"127.0.0.1:{free_port()}", STATNET_RPC_TIMEOUT="10").start()
    notify = StatnetProcess(settings, services=("notify",), name="notify-alone").start()
    try:
        edge.api.import_metadata(doc)
        r = edge.api.post("/api/deadlines/check?asOf=2026-03-20")
        assert r.status_code == 503 and "submission" in r.json()["message"], r.text
        assert edge.api.get(f"/api/notifications?recipient={supervisor}").json()["notifications"] == []
    finally:
        notify.close()
        edge.close()
