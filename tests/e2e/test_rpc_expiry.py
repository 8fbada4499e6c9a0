"""A 503 means nothing was done: the gateway's request to a service that is down expires
on the broker with the gateway's timeout, so the service, back a minute later, does not
store a return whose sender was told it failed (and was given no id to follow)."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from shared.db import engine_for
from tests.support.builders import tree, village_data_set, village_return
from tests.support.client import wait_until
from tests.support.processes import StatnetProcess

pytestmark = pytest.mark.e2e

UID = "EXP"


def stored_returns(settings) -> int:
    with engine_for(settings.database_url).connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM submission.return")).scalar()


def a_village(api, uid: str):
    """A village and its yearly data set, posted: (codes, village)."""
    t, units = tree(uid)
    codes, doc = village_data_set(uid)
    doc["orgUnits"] = units
    api.import_metadata(doc)
    return codes, t.villages[t.districts[0]][0]


def test_a_request_the_gateway_gave_up_on_is_not_done_later(settings):
    edge = StatnetProcess(settings, services=("gateway", "registry", "validation", "aggregation", "notify"),
                          name="edge", STATNET_RPC_TIMEOUT="3").start()
    submission = StatnetProcess(settings, services=("submission",), name="submission").start()
    try:
        codes, village = a_village(edge.api, UID)
        ok = edge.api.submit(village_return(codes, village, "2024", 1, 2))
        assert ok.status_code == 202, ok.text

        submission.kill()
        r = edge.api.submit(village_return(codes, village, "2025", 3, 4))
        # told at once when the broker already knows no instance runs, else after the timeout
        message = r.json()["message"]
        assert r.status_code == 503 and ("did not answer within 3s" in message or "not running" in message), r.text
        assert r.headers["Retry-After"] == "5"
        time.sleep(1)  # past the request's expiry on the broker
        submission.start()
        # the service is back and working, and the request it never saw stays undone
        later = edge.api.submit(village_return(codes, village, "2023", 5, 6))
        assert later.status_code == 202, later.text
        wait_until(lambda: edge.api.get(f"/api/submissions/{later.json()['id']}").json()["status"] == "AGGREGATED",
                   timeout=60, message="the next return aggregated")
        assert stored_returns(settings) == 2
        assert edge.api.analytics(codes["pop"], village, "2025") == {}
    finally:
        submission.close()
        edge.close()


@pytest.mark.parametrize("apart", [False, True], ids=["one-process", "through-the-broker"])
def test_a_return_held_past_the_gateways_timeout_is_not_stored_after_its_503(settings, apart):
    """The request was taken, then held (here: behind the place's intake lock; in the chaos
    probe that found it, 30 s waiting for a pool connection after a restart) until the
    gateway had answered 503: it was stored when the hold ended, a return its sender was
    told had failed, whose higher number would replace a correction sent meanwhile. It is
    rolled back instead: the deadline travels with the request, in the process and through
    the broker."""
    uid = UID + ("B" if apart else "L")
    everything = ("gateway", "registry", "validation", "aggregation", "notify")
    edge = StatnetProcess(settings, services=everything if apart else everything + ("submission",),
                          name=f"edge-{uid}", STATNET_RPC_TIMEOUT="3").start()
    submission = StatnetProcess(settings, services=("submission",), name=f"submission-{uid}",
                                STATNET_RPC_TIMEOUT="3").start() if apart else None
    try:
        codes, village = a_village(edge.api, uid)
        before = stored_returns(settings)
        engine = engine_for(settings.database_url)
        with engine.begin() as held:  # the place's intake lock, as a slow first intake holds it
            held.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                         {"k": f"admin|{codes['ds']}|{village}|2025"})
            r = edge.api.submit(village_return(codes, village, "2025", 3, 4))
            assert r.status_code == 503 and "did not answer within 3s" in r.json()["message"], r.text
        time.sleep(2)  # the held intake goes on now, past its caller's deadline
        assert stored_returns(settings) == before, "stored after the sender was told 503"
        assert "stopped waiting" in (submission or edge).log_text()
        # sent again, it is taken as any return is
        again = edge.api.submit(village_return(codes, village, "2025", 3, 4))
        assert again.status_code == 202, again.text
        wait_until(lambda: edge.api.get(f"/api/submissions/{again.json()['id']}").json()["status"] == "AGGREGATED",
                   timeout=60, message="the return sent again aggregated")
        assert stored_returns(settings) == before + 1
    finally:
        if submission is not None:
            submission.close()
        edge.close()


def test_a_dry_run_with_validation_down_names_validation(settings):
    edge = StatnetProcess(settings, services=("gateway", "registry", "submission", "aggregation", "notify"),
                          name="no-validation", STATNET_RPC_TIMEOUT="3").start()
    try:
        t, units = tree(UID + "D")
        codes, doc = village_data_set(UID + "D")
        doc["orgUnits"] = units
        edge.api.import_metadata(doc)
        r = edge.api.post("/api/dataValueSets?dryRun=true",
                          json=village_return(codes, t.villages[t.districts[0]][0], "2024", 1, 2))
        assert r.status_code == 503 and "validation" in r.json()["message"], r.text
        assert r.headers["Retry-After"] == "5"
    finally:
        edge.close()


def test_a_stopped_service_is_a_quick_503_and_a_stopped_registry_stops_no_intake(settings):
    """Aggregation stopped: its routes answer 503 "not running" at once, not after the RPC
    timeout (forty waiting requests held every worker of the gateway, and a return waited
    a minute behind them). Registry stopped: a token it confirmed before still submits."""
    edge = StatnetProcess(settings, services=("gateway", "submission", "validation", "notify"),
                          name="edge-q", STATNET_RPC_TIMEOUT="20").start()
    registry = StatnetProcess(settings, services=("registry",), name="registry-q").start()
    aggregation = StatnetProcess(settings, services=("aggregation",), name="aggregation-q").start()
    try:
        uid = UID + "Q"
        t, units = tree(uid)
        codes, doc = village_data_set(uid, rules=False)
        doc["orgUnits"] = units
        edge.api.import_metadata(doc)
        village = t.villages[t.districts[0]][0]
        token = edge.api.create_user(f"rep-{uid}", "reporter", t.districts[0])
        assert edge.api.submit(village_return(codes, village, "2021", 1, 2), token=token).status_code == 202

        aggregation.kill()
        started = time.monotonic()
        r = edge.api.get(f"/api/analytics?dx={codes['pop']}&ou={village}&pe=2021")
        assert r.status_code == 503 and "not running" in r.json()["message"], r.text
        assert time.monotonic() - started < 10  # not the 20 s timeout

        registry.kill()
        time.sleep(6)  # past the gateway's five-second token cache
        r = edge.api.submit(village_return(codes, village, "2022", 3, 4), token=token)
        assert r.status_code == 202, r.text
        assert edge.api.get("/api/orgUnits/" + village, token=token).status_code == 503  # registry's own route

        registry.start()
        aggregation.start()
        wait_until(lambda: edge.api.get(f"/api/submissions/{r.json()['id']}").json()["status"] == "AGGREGATED",
                   timeout=60, message="the return sent while the registry was down aggregated")
    finally:
        for p in (aggregation, registry, edge):
            p.close()
