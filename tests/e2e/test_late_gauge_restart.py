"""statnet_late_returns (and statnet_expected_returns, its denominator) say what the latest
deadline check found, across a restart: the "late returns" alert (deploy/alerts.yml) must
not clear on every deploy until the next hourly check. With STATNET_REPORTING_START, the
months before go-live (they went on paper) are neither late nor expected."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.builders import tree, village_data_set
from tests.support.processes import StatnetProcess, restarted_live_from

pytestmark = pytest.mark.e2e

UID = "LGR"


def gauges(api, ds: str) -> tuple[float | None, float | None]:
    """(statnet_late_returns, statnet_expected_returns) of ``ds``, scraped."""
    found = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for s in family.samples:
            if s.name in ("statnet_late_returns", "statnet_expected_returns") and s.labels.get("dataset") == ds:
                found[s.name] = s.value
    return found.get("statnet_late_returns"), found.get("statnet_expected_returns")


def test_the_late_returns_gauge_survives_a_restart_and_starts_at_go_live(settings):
    statnet = StatnetProcess(settings, name="statnet").start()
    try:
        t, units = tree(UID, opening="2026-01-01")
        codes, doc = village_data_set(UID, period_type="Monthly", rules=False)
        doc["orgUnits"] = units
        statnet.api.import_metadata(doc)
        r = statnet.api.post("/api/deadlines/check?asOf=2026-03-20")  # January and February late
        assert r.status_code == 200, r.text
        villages = len(t.all_villages)
        assert (r.json()["late"], r.json()["expected"]) == (2 * villages, 2 * villages)
        assert gauges(statnet.api, codes["ds"]) == (2 * villages, 2 * villages)
        statnet.kill()
        statnet.start()
        assert gauges(statnet.api, codes["ds"]) == (2 * villages, 2 * villages)

        # live from 15 February: February (under way that day) is chased, January is not
        restarted_live_from(statnet, "2026-02-15")
        r = statnet.api.post("/api/deadlines/check?asOf=2026-03-21")
        assert r.status_code == 200, r.text
        assert (r.json()["late"], r.json()["expected"]) == (villages, villages)
        assert gauges(statnet.api, codes["ds"]) == (villages, villages)
    finally:
        statnet.close()
