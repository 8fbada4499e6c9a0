"""statnet_late_returns says what the latest deadline check found, across a restart: the
"late returns" alert (deploy/alerts.yml) must not clear on every deploy until the next
hourly check."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.builders import tree, village_data_set
from tests.support.processes import StatnetProcess

pytestmark = pytest.mark.e2e

UID = "LGR"


def late(api, ds: str) -> float | None:
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for s in family.samples:
            if s.name == "statnet_late_returns" and s.labels.get("dataset") == ds:
                return s.value
    return None


def test_the_late_returns_gauge_survives_a_restart(settings):
    statnet = StatnetProcess(settings, name="statnet").start()
    try:
        t, units = tree(UID, opening="2026-01-01")
        codes, doc = village_data_set(UID, period_type="Monthly", rules=False)
        doc["orgUnits"] = units
        statnet.api.import_metadata(doc)
        r = statnet.api.post("/api/deadlines/check?asOf=2026-03-20")  # January and February late
        assert r.status_code == 200, r.text
        villages = len(t.all_villages)
        assert late(statnet.api, codes["ds"]) == 2 * villages
        statnet.kill()
        statnet.start()
        assert late(statnet.api, codes["ds"]) == 2 * villages
    finally:
        statnet.close()
