"""``statnet run`` opens its HTTP address only once every service beside the gateway takes
calls: the first request after ``/health`` answers is served, not told "not running"."""
from __future__ import annotations

import eventlet
import requests

from services.runner import build, start_edge_last, stop_edge_first
from tests.support.builders import tree, village_data_set
from tests.support.client import Api, wait_until


def test_the_gateway_listens_only_once_the_services_beside_it_take_calls(settings, monkeypatch):
    runner = build(settings)
    registry = next(c for c in runner.containers if c.service_name == "registry")
    start_registry = registry.start

    def slow_start():  # a service that takes its time to set up its consumers
        eventlet.sleep(1.5)
        start_registry()

    monkeypatch.setattr(registry, "start", slow_start)
    api = Api(f"http://{settings.http_address}", settings.admin_token)
    starting = eventlet.spawn(start_edge_last, runner)
    try:
        def answers():
            try:
                return api.get("/health").status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(answers, timeout=30, interval=0.02, message="statnet /health")
        # at once, as a district system polling /health before its first request would
        _, units = tree("RUN", districts=1, villages=1)
        _, doc = village_data_set("RUN", rules=False)
        doc["orgUnits"] = units
        r = api.post("/api/metadata", json=doc)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "OK"
        starting.wait()
    finally:
        starting.wait()
        stop_edge_first(runner)
