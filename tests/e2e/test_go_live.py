"""Setting the go-live date (STATNET_REPORTING_START) after a check had already found the
months before it late: the alerts not yet sent about those months are withdrawn, a pending
digest keeps only its other lines, and the late-returns gauge is judged by the new start at
once, not at the next hourly check. Alerts already sent stay, as what was sent."""
from __future__ import annotations


import pytest
import sqlalchemy as sa

from shared.db import engine_for
from tests.support.builders import tree, village_data_set
from tests.support.processes import StatnetProcess, restarted_live_from

pytestmark = pytest.mark.e2e

UID = "GOL"


def pending(settings) -> list[tuple]:
    """(type, recipient, period, lines of a digest) of every alert waiting to go out."""
    with engine_for(settings.database_url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT type, recipient, period, details->'late' FROM notify.notification "
            "WHERE status = 'PENDING' ORDER BY type, recipient, period, org_unit"))]


def test_go_live_set_late_withdraws_the_alerts_about_paper_months(settings):
    # nobody listens on the SMTP port: every e-mail waits, PENDING, for its next attempt
    statnet = StatnetProcess(settings, name="statnet").start()
    try:
        t, units = tree(UID, opening="2026-01-01")
        codes, doc = village_data_set(UID, period_type="Monthly", timely_days=10, rules=False)
        d1 = t.districts[0]
        doc["orgUnits"] = units
        doc["focalPoints"] = [
            {"code": f"S1{UID}", "name": "ຫົວໜ້າເມືອງ", "orgUnit": d1, "role": "supervisor",
             "email": "d1@example.la", "language": "lo"},
            {"code": f"SP{UID}", "name": "ຫົວໜ້າແຂວງ", "orgUnit": t.province, "role": "supervisor",
             "email": "province@example.la", "language": "lo", "digest": True}]
        statnet.api.import_metadata(doc)
        r = statnet.api.post("/api/deadlines/check?asOf=2026-03-20")  # January and February late
        assert r.status_code == 200, r.text
        assert (r.json()["late"], r.json()["withdrawn"]) == (8, 0)
        before = pending(settings)
        # the district's supervisor: its two villages, two months; the province's: all four
        # villages' alerts, to go out inside one digest of eight lines
        assert [(k, p) for k, who, p, _ in before if who == f"S1{UID}"] == [("LATE_RETURN", "202601")] * 2 + [
            ("LATE_RETURN", "202602")] * 2
        (digest,) = [lines for k, _, _, lines in before if k == "LATE_DIGEST"]
        assert sorted(line["period"] for line in digest) == ["202601"] * 4 + ["202602"] * 4

        # live from 15 February: January went on paper, February is chased
        restarted_live_from(statnet, "2026-02-15")
        after = pending(settings)
        assert not [a for a in after if a[0] == "LATE_RETURN" and a[2] == "202601"]
        assert [(k, p) for k, who, p, _ in after if who == f"S1{UID}" and p == "202602"] == [
            ("LATE_RETURN", "202602")] * 2
        march = [lines for k, _, p, lines in after if (k, p) == ("LATE_DIGEST", "2026-03-20")]
        assert [sorted(line["period"] for line in lines) for lines in march] == [["202602"] * 4]
        with engine_for(settings.database_url).connect() as conn:
            count = conn.execute(sa.text("SELECT details->>'count' FROM notify.notification "
                                         "WHERE type = 'LATE_DIGEST' AND period = '2026-03-20'")).scalar()
        assert count == "4"
        assert "withdrew 6 alert(s)" in statnet.log_text()  # 2 + 4 about January

        # live from March: February too; the March digest is left with nothing, and goes
        restarted_live_from(statnet, "2026-03-01")
        after = pending(settings)
        assert not [a for a in after if a[0] == "LATE_RETURN" and a[2] in ("202601", "202602")]
        assert not [a for a in after if (a[0], a[2]) == ("LATE_DIGEST", "2026-03-20")]
        # today's digest, made by the check at the first restart, lists no month before March
        assert all(line["period"] >= "202603" for k, _, _, lines in after if k == "LATE_DIGEST" for line in lines)
        assert "withdrew 7 alert(s)" in statnet.log_text()
    finally:
        statnet.close()
