"""Nothing lost, nothing counted twice, measured with real processes (issue 9).

Each test sends a burst of 120 returns (ten villages, twelve months of one year
of its own) through the HTTP API while something goes wrong: statnet is
SIGKILLed and restarted, SIGTERMed, the broker is stopped and started, the
database drops every connection, two instances of every service share the
work, or poison messages sit among the good ones. Then it checks, with exact
counts, that every return was stored once, reached AGGREGATED, and is in the
totals exactly once; and that nothing is left in a dead-letter queue except
the poison.
"""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import sqlalchemy as sa
from kombu import Connection

from shared import topology
from shared.db import engine_for
from shared.events import envelope
from tests.conftest import free_port
from tests.support.builders import tree
from tests.support.burst import Burst
from tests.support.client import wait_until
from tests.support.processes import PrivateBroker, StatnetProcess, cli

pytestmark = pytest.mark.e2e

UID = "FLT"
DS, S = f"DS{UID}", f"S{UID}"


def metadata() -> tuple:
    t, units = tree(UID, districts=2, villages=5)
    doc = {"orgUnits": units,
           "dataElements": [{"code": S, "name": "Count", "valueType": "INTEGER", "aggregationType": "SUM",
                             "disaggregation": ["M", "F"]},
                            {"code": f"T{UID}", "name": "Note", "valueType": "INTEGER", "aggregationType": "SUM"}],
           "dataSets": [{"code": DS, "name": "Monthly", "periodType": "Monthly", "orgUnitLevel": 4,
                         "dataElements": [S, f"T{UID}"], "timelyDays": 10}]}
    return t, doc


def workload(t, year: int) -> list[tuple[str, dict]]:
    out = []
    for i, village in enumerate(t.all_villages):
        for month in range(1, 13):
            m, f = 10 * i + month, 100 + i + month
            body = {"dataSet": DS, "period": f"{year}{month:02d}", "orgUnit": village,
                    "dataValues": [{"dataElement": S, "categoryOptionCombo": "M", "value": str(m)},
                                   {"dataElement": S, "categoryOptionCombo": "F", "value": str(f)}]}
            out.append((f"{year}-{village}-{month}", body))
    return out


def expected_total(returns) -> int:
    return sum(int(v["value"]) for _, body in returns for v in body["dataValues"])


def assert_exactly_once(api, settings, t, year: int, burst: Burst) -> None:
    """Every acknowledged return stored once, AGGREGATED, in every total exactly once."""
    for key, rid in burst.acknowledged.items():
        status = api.wait_status(rid, timeout=240)["status"]
        assert status == "AGGREGATED", (key, rid, status)
    assert len(set(burst.acknowledged.values())) == len(burst.returns)
    total = expected_total(burst.returns)
    assert api.analytics(S, t.province, str(year)) == {(S, t.province, str(year)): total}
    with engine_for(settings.database_url).connect() as conn:
        def count(sql):
            return conn.execute(sa.text(sql), {"y": f"{year}%"}).scalar()

        assert count("SELECT count(*) FROM submission.return WHERE period LIKE :y") == len(burst.returns)
        assert count("SELECT count(*) FROM aggregation.data_value WHERE period LIKE :y") == 2 * len(burst.returns)
        assert count("SELECT count(*) FROM aggregation.completeness WHERE period LIKE :y") == len(burst.returns)
        assert count("SELECT count(*) FROM validation.result WHERE period LIKE :y") == len(burst.returns)
    # an event whose outbox row survived a failed delete is published again and then
    # removed: every outbox drains (a relay may be backing off for a few seconds)
    engine = engine_for(settings.database_url)

    def drained():
        with engine.connect() as conn:
            return all(conn.execute(sa.text(f"SELECT count(*) FROM {s}.outbox")).scalar() == 0
                       for s in ("registry", "submission", "validation", "aggregation", "notify"))

    try:
        wait_until(drained, timeout=60, message="every outbox drained")
    except AssertionError:
        with engine.connect() as conn:
            locks = conn.execute(sa.text(
                "SELECT a.pid, a.state, a.xact_start, left(a.query, 120) FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.relation = 'submission.outbox'::regclass")).all()
        raise AssertionError(f"outbox not drained; lock holders: {locks}")
    depths = topology.queue_depths(settings, [topology.dlq_name(s) for s in
                                              ("registry", "submission", "validation", "aggregation", "notify")])
    assert all(ready == 0 for ready, _ in depths.values()), depths


@pytest.fixture(scope="module")
def world(settings):
    p = StatnetProcess(settings, name="statnet").start()
    t, doc = metadata()
    p.api.import_metadata(doc)
    yield t, p
    p.close()


@pytest.fixture
def statnet(world):
    """The module's statnet process, running (a test may have killed it)."""
    t, p = world
    if not p.alive():
        p.start()
    return p


def test_sigkill_in_the_middle_of_a_burst_loses_nothing(settings, world, statnet):
    t, _ = world
    burst = Burst([statnet.api], workload(t, 2011)).start()
    burst.wait_acknowledged(30)
    statnet.kill()
    statnet.start()
    burst.finish()
    assert_exactly_once(statnet.api, settings, t, 2011, burst)


def test_sigterm_finishes_in_flight_work_and_exits(settings, world, statnet):
    t, _ = world
    burst = Burst([statnet.api], workload(t, 2012)).start()
    burst.wait_acknowledged(30)
    assert statnet.terminate() == 0
    # the requests in flight were answered, not killed: the gateway stops first, while the
    # services it calls still run (all stopped at once, it waited on them until forced)
    log = statnet.log_text()
    assert "graceful stop did not finish" not in log and "active worker" not in log, log[-3000:]
    statnet.start()
    burst.finish()
    assert_exactly_once(statnet.api, settings, t, 2012, burst)


def test_sigterm_while_starting_stops_once_started(settings, world, statnet):
    """A SIGTERM while the services start (a deploy that changes its mind, a supervisor's
    restart loop): the stop waits for the start, then stops everything, quickly. Stopped
    mid-start, the start went on after the stop, the gateway answered after it and the
    forced kill ended the process."""
    statnet.terminate()
    began = len(statnet.log_text().splitlines())
    statnet.start(wait=False)

    def starting():
        return any("statnet starting" in line for line in statnet.log_text().splitlines()[began:])

    wait_until(starting, timeout=60, interval=0.01, message="statnet to begin starting")
    assert statnet.terminate(timeout=40) == 0
    log = "\n".join(statnet.log_text().splitlines()[began:])
    assert "graceful stop did not finish" not in log and "thread exited with error" not in log, log[-3000:]
    assert "statnet stopped" in log, log[-3000:]


def test_dropped_database_connections_during_a_burst(settings, world, statnet):
    t, _ = world
    burst = Burst([statnet.api], workload(t, 2013)).start()
    burst.wait_acknowledged(20)
    admin = sa.create_engine(engine_for(settings.database_url).url.set(database="postgres"),
                             isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = engine_for(settings.database_url).url.database
    dropped = 0
    deadline = time.monotonic() + 8
    with admin.connect() as conn:
        while time.monotonic() < deadline:
            dropped += len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid() AND application_name NOT LIKE 'pytest%'"),
                {"n": name}).all())
            time.sleep(0.3)
    admin.dispose()
    assert dropped > 0
    burst.finish()
    assert_exactly_once(statnet.api, settings, t, 2013, burst)


def test_a_database_refusing_connections_is_a_503_to_try_again(settings, world, statnet):
    """While the database refuses every connection, a request is a 503 with Retry-After
    (the registry's token lookup, made before anything else, answered it as a 500
    "internal error"), /health names the database, and once it is back the same return is
    taken."""
    t, _ = world
    token = statnet.api.create_user(f"rep-{UID}-db", "reporter", t.province)  # never used: looked up
    (key, body), *_ = workload(t, 2018)
    name = engine_for(settings.database_url).url.database
    admin = sa.create_engine(engine_for(settings.database_url).url.set(database="postgres"),
                             isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    def refuse(refused: bool) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(not refused).lower()}'))
            if refused:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})

    refuse(True)
    try:
        for answer in (statnet.api.submit(body, token=token, headers={"Idempotency-Key": key}),
                       statnet.api.get(f"/api/completeness?ds={DS}&ou={t.province}&pe=201801")):
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] and "retry" in answer.json()["message"], answer.text
        health = statnet.api.get("/health")
        assert health.status_code == 503 and "unreachable" in health.json()["checks"]["database"], health.text
    finally:
        refuse(False)
        admin.dispose()
    r = wait_until(lambda: (lambda x: x if x.status_code == 202 else None)(
        statnet.api.submit(body, token=token, headers={"Idempotency-Key": key})), timeout=60, interval=1,
        message="taken once the database is back")
    assert statnet.api.wait_status(r.json()["id"], timeout=60)["status"] == "AGGREGATED"


def test_two_instances_of_every_service_share_the_work(settings, world, statnet):
    t, _ = world
    second = StatnetProcess(settings, name="second", http_address=f"127.0.0.1:{free_port()}").start()
    try:
        burst = Burst([statnet.api, second.api], workload(t, 2014)).start().finish()
        assert_exactly_once(statnet.api, settings, t, 2014, burst)
        # both instances consume: the event queues have two consumers each
        names = ["evt-submission-return_received--validation.validate_return",
                 "evt-validation-return_validated--aggregation.aggregate_return"]
        consumers = topology.queue_depths(settings, names)
        assert all(c == 2 for _, c in consumers.values()), consumers
    finally:
        second.terminate()


def _publish(settings, message, routing_key: str = "return_validated") -> None:
    with Connection(settings.amqp_uri) as conn:
        conn.Producer().publish(message, exchange=topology.events_exchange("validation"),
                                routing_key=routing_key, serializer="json",
                                declare=[topology.events_exchange("validation")])


def _metric(api, name: str, labels: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_poison_messages_go_to_the_dead_letter_queue_and_the_rest_flows(settings, world, statnet, tmp_path):
    t, _ = world
    village = t.all_villages[0]
    # one message that can never fit its schema, one that fits but keeps failing:
    # a value that is not a number for an INTEGER element (validation was bypassed)
    _publish(settings, {"this is": "not an event"})
    bad = envelope("validation", "return_validated", {
        "return_id": "poison-1", "seq": 10**13, "data_set": DS, "org_unit": village, "period": "201501",
        "received_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "on_time": False, "submitted_by": "test",
        "values": [{"data_element": f"T{UID}", "category_option_combo": "default", "org_unit": village,
                    "period": "201501", "value": "abc", "comment": None}],
        "violations": []})
    _publish(settings, bad)
    burst = Burst([statnet.api], workload(t, 2015)).start().finish()

    def parked(service, n):
        return topology.queue_depths(settings, [topology.dlq_name(service)])[topology.dlq_name(service)][0] >= n

    wait_until(lambda: parked("aggregation", 2), timeout=90, message="poison parked in aggregation's DLQ")
    for service in ("registry", "submission", "notify"):  # the malformed one reached every consumer
        wait_until(lambda s=service: parked(s, 1), timeout=30, message=f"malformed event parked by {service}")
    assert _metric(statnet.api, "statnet_dead_letters_total", 'service="aggregation"') == 2

    listed = cli(settings, "dlq", "list", "aggregation")
    assert listed.returncode == 0, listed.stderr
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(items) == 2
    assert any("does not fit" in i["error"] for i in items)
    assert any("InvalidOperation" in i["error"] and i["attempts"] == 3 for i in items)
    assert all(i["origin_queue"] == "evt-validation-return_validated--aggregation.aggregate_return"
               for i in items)

    # the good returns flowed past the poison
    for service in ("registry", "submission", "notify"):
        assert cli(settings, "dlq", "replay", service).returncode == 0  # back to DLQ again: still poison
    wait_until(lambda: all(parked(s, 1) for s in ("registry", "submission", "notify")), timeout=30,
               message="malformed events parked again")

    # fix the cause (the element holds text after all) and replay: the fixable one succeeds
    statnet.api.import_metadata({"dataElements": [{"code": f"T{UID}", "valueType": "TEXT"}]})
    replayed = cli(settings, "dlq", "replay", "aggregation")
    assert replayed.returncode == 0 and "replayed 2" in replayed.stdout
    wait_until(lambda: topology.queue_depths(settings, [topology.dlq_name("aggregation")])
               [topology.dlq_name("aggregation")][0] == 1, timeout=30, message="only the malformed one left")
    # out of the dead-letter queue is not yet handled: wait for it to be stored
    wait_until(lambda: _stored_text(settings, "poison-1") == "abc", timeout=30, message="replayed value stored")
    # the malformed one can never be handled: given up on by its id, kept in a file
    [malformed] = [json.loads(line) for line in cli(settings, "dlq", "list", "aggregation").stdout.splitlines()]
    assert malformed["id"] and malformed["event_id"] is None  # no event: named when it was parked
    archive = tmp_path / "dropped.jsonl"
    dropped = cli(settings, "dlq", "drop", "aggregation", "--id", malformed["id"], "--to", str(archive))
    assert dropped.returncode == 0 and "dropped 1 message(s)" in dropped.stdout, dropped.stderr
    assert json.loads(json.loads(archive.read_text(encoding="utf-8"))["body"]) == {"this is": "not an event"}
    assert not parked("aggregation", 1)
    # empty the other DLQs for the other tests' checks
    for service in ("registry", "submission", "notify"):
        with Connection(settings.amqp_uri) as conn:
            conn.default_channel.queue_purge(topology.dlq_name(service))
    assert len(burst.acknowledged) == 120


def _stored_text(settings, return_id: str):
    with engine_for(settings.database_url).connect() as conn:
        return conn.execute(sa.text("SELECT text_value FROM aggregation.data_value WHERE return_id = :r"),
                            {"r": return_id}).scalar()


@pytest.fixture(scope="module")
def private_broker(backend):
    broker = PrivateBroker(backend)
    yield broker
    broker.close()


def test_broker_stopped_and_started_during_a_burst(settings, private_broker):
    settings = settings.replace(amqp_uri=private_broker.amqp_uri)
    p = StatnetProcess(settings, name="broker-restart", http_address=f"127.0.0.1:{free_port()}").start()
    try:
        t, doc = metadata()
        # T holds text once the poison test has fixed it (values of it stored): narrowing it
        # back would be refused, and this test sends none of it
        doc["dataElements"][1]["valueType"] = "TEXT"
        p.api.import_metadata(doc)
        # two clients at a time, so the burst is still running when stop_app (itself slow to
        # start on a loaded machine) takes the broker down: the outage must hit the burst
        burst = Burst([p.api], workload(t, 2016), concurrency=2).start()
        burst.wait_acknowledged(10)
        private_broker.stop_app()
        assert len(burst.acknowledged) < len(burst.returns), "the burst ended before the outage began"
        time.sleep(3)  # an outage, not a blip
        private_broker.start_app()
        burst.finish()
        # Returns were in flight during the outage (checked above). Their clients either got
        # a 503 and sent again with the same key, or waited while nameko reconnected; which
        # one depends on timing. Either way each must count exactly once:
        assert_exactly_once(p.api, settings, t, 2016, burst)
    finally:
        p.terminate()


def test_a_broker_outage_is_a_503_to_try_again_with_services_apart(settings, private_broker):
    """The gateway asks submission, in another process, over the broker: with the broker
    gone the answer is 503 with Retry-After (was a 500), and the same return sent again
    with its Idempotency-Key once the broker is back is stored once."""
    settings = settings.replace(amqp_uri=private_broker.amqp_uri)
    edge = StatnetProcess(settings, services=("gateway", "registry"), name="edge-apart",
                          http_address=f"127.0.0.1:{free_port()}", STATNET_RPC_TIMEOUT="10").start()
    rest = StatnetProcess(settings, services=("submission", "validation", "aggregation", "notify"),
                          name="rest-apart", http_address=f"127.0.0.1:{free_port()}").start()
    try:
        t, doc = metadata()
        doc["dataElements"][1]["valueType"] = "TEXT"  # as the broker test above left it
        edge.api.import_metadata(doc)
        (key, body), *_ = workload(t, 2017)
        private_broker.stop_app()
        try:
            r = edge.api.submit(body, headers={"Idempotency-Key": key})
            assert r.status_code == 503, r.text
            assert "broker" in r.json()["message"] and r.headers["Retry-After"] == "5"
            # and the operator's scrape says so: the queue series had vanished, the rules on
            # them silent, and nothing fired
            scraped = edge.api.get("/metrics").text
            assert "statnet_broker_up 0.0" in scraped and "statnet_queue_messages{" not in scraped, scraped[-2000:]
        finally:
            private_broker.start_app()
        wait_until(lambda: "statnet_broker_up 1.0" in edge.api.get("/metrics").text, timeout=60, interval=1,
                   message="statnet_broker_up 1 once the broker is back")
        r = wait_until(lambda: (lambda x: x if x.status_code == 202 else None)(
            edge.api.submit(body, headers={"Idempotency-Key": key})), timeout=90, interval=1,
            message="taken once the broker is back")
        assert edge.api.wait_status(r.json()["id"], timeout=60)["status"] == "AGGREGATED"
        with engine_for(settings.database_url).connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM submission.return WHERE data_set = :ds AND period = '201701'"),
                                {"ds": DS}).scalar() == 1
    finally:
        rest.terminate()
        edge.terminate()


@pytest.mark.parametrize("services", [("notify",), ("gateway",)])
def test_sigterm_while_the_broker_is_down_still_stops(settings, private_broker, services):
    """The broker gone, a SIGTERM: the graceful stop waits on the broker, the forced one
    after its grace, and the process ends either way (a lone gateway and a lone notify kept
    retrying the broker for minutes after it, until it came back: an operator probe)."""
    from services.runner import STOP_SECONDS

    settings = settings.replace(amqp_uri=private_broker.amqp_uri)
    p = StatnetProcess(settings, services=services, name=f"stop-broker-down-{services[0]}",
                       http_address=f"127.0.0.1:{free_port()}", STATNET_RPC_TIMEOUT="3").start()
    try:
        private_broker.stop_app()
        try:
            time.sleep(3)  # the process has met the broker's absence
            began = time.monotonic()
            p.proc.send_signal(15)
            p.proc.wait(STOP_SECONDS + 60)
            assert time.monotonic() - began < STOP_SECONDS + 30, p.log_text()[-2000:]
        finally:
            private_broker.start_app()
    finally:
        p.close()
