"""Several gateways in front of one registry (CONTRACT 1: each service may run as several
instances). A token is cached in each gateway a few seconds, and while the registry can't be
asked, a token it confirmed within the hour still stands. A rotation's user_changed came to
one gateway of several (they shared its queue): another that had confirmed the old token
kept it, and with the registry stopping within those seconds, for the hour."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from shared import topology
from shared.db import engine_for
from tests.conftest import free_port
from tests.support.builders import tree, village_data_set, village_return
from tests.support.client import wait_until
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
        users = [f"rep-{UID}-{n}" for n in (1, 2)]
        old = {user: one.api.create_user(user, "reporter", t.districts[0]) for user in users}
        for year, token in zip(("2021", "2022"), old.values()):  # the second gateway confirms both
            assert two.api.submit(village_return(codes, village, year, 1, 2), token=token).status_code == 202
        # both rotated through the first gateway: on a queue the gateways share, the broker hands
        # the two events one to each, so the second would hear of one rotation only
        for user in users:
            assert one.api.create_user(user, "reporter", t.districts[0]) != old[user]
        with engine_for(settings.database_url).connect() as conn:
            wait_until(lambda: conn.execute(sa.text("SELECT count(*) = 0 FROM registry.outbox")).scalar(),
                       timeout=30, message="the rotations' events published")
        registry.kill()

        def refused() -> bool:  # nothing stands for a replaced token, the registry away
            answers = [two.api.submit(village_return(codes, village, "2023", 3, 4), token=token)
                       for token in old.values()]
            assert all(r.status_code in (202, 503) for r in answers), [r.text for r in answers]
            return all(r.status_code == 503 and "registry" in r.json()["message"] for r in answers)

        wait_until(refused, timeout=20, interval=0.5, message="both replaced tokens refused by the second gateway")
        # the shared queue stays, consumed by both: it keeps the event routable (the registry's
        # outbox publishes it mandatory) while no gateway runs, and shows them to statnet status
        queue = topology.event_queue_name("registry", "user_changed", "gateway", "forget_changed_user")
        assert topology.queue_depths(settings, [queue])[queue] == (0, 2)
    finally:
        for process in (two, one, registry, back):
            process.close()
