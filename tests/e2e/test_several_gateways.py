"""Several gateways in front of one registry (CONTRACT 1: each service may run as several
instances). A token is cached in each gateway a few seconds, and while the registry can't be
asked, a token it confirmed within the hour still stands. A rotation's user_changed came to
one gateway of several (they shared its queue): another that had confirmed the old token
kept it, and with the registry stopping within those seconds, for the hour."""
from __future__ import annotations

import time

import pytest

from shared import topology
from tests.conftest import free_port
from tests.support.builders import tree, village_data_set, village_return
from tests.support.processes import StatnetProcess

pytestmark = pytest.mark.e2e

UID = "SGW"


def test_a_token_rotated_through_one_gateway_is_dropped_by_every_gateway(settings):
    back = StatnetProcess(settings, services=("submission", "validation", "aggregation", "notify"),
                          name="back").start()
    registry = StatnetProcess(settings, services=("registry",), name="registry-sgw").start()
    one = StatnetProcess(settings, services=("gateway",), name="gateway-1").start()
    two = StatnetProcess(settings, services=("gateway",), name="gateway-2",
                         http_address=f"127.0.0.1:{free_port()}").start()
    try:
        t, units = tree(UID)
        codes, doc = village_data_set(UID, rules=False)
        doc["orgUnits"] = units
        one.api.import_metadata(doc)
        village = t.villages[t.districts[0]][0]
        old = one.api.create_user(f"rep-{UID}", "reporter", t.districts[0])
        assert two.api.submit(village_return(codes, village, "2021", 1, 2), token=old).status_code == 202
        # rotated through the first; the second confirmed the old token a moment ago
        new = one.api.create_user(f"rep-{UID}", "reporter", t.districts[0])
        assert new != old
        time.sleep(2)  # the rotation's event on its way to every gateway
        registry.kill()
        r = two.api.submit(village_return(codes, village, "2022", 3, 4), token=old)
        assert r.status_code == 503 and "registry" in r.json()["message"], r.text
        # each gateway's queue of the event is its own and goes with it: none shared is left
        # behind, nor the one an earlier version declared (it would keep every event for ever)
        queue = topology.event_queue_name("registry", "user_changed", "gateway", "forget_changed_user")
        assert topology.queue_depths(settings, [queue])[queue] == (0, 0)
    finally:
        for process in (two, one, registry, back):
            process.close()
