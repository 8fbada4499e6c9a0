"""Operators' view: every metric the contract and issue 10 name, scraped over HTTP from
``/metrics`` while a real flow runs, moves as the flow says it should. Also: no duplicated
series, and a service running alone serves its own ``/metrics`` port."""
from __future__ import annotations

import datetime as dt
import time

import pytest
import requests
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from shared import topology
from shared.periods import today
from tests.conftest import free_port
from tests.support.builders import tree, village_data_set, village_return
from tests.support.client import wait_until
from tests.support.processes import StatnetProcess, cli

UID = "MET"
YEAR = str(today().year - 1)  # the yearly data set's reporting period


def deadline() -> str:
    """Whether its deadline (end + the builders' 15 timelyDays) has passed, from 16 January:
    asked when the service is, not when pytest imported this file (a run collected before
    the province's midnight of the 15th reached here after it)."""
    return "passed" if today() > dt.date(int(YEAR), 12, 31) + dt.timedelta(days=15) else "ahead"


class Scrape:
    """One scrape of /metrics, as Prometheus would parse it."""

    def __init__(self, text: str):
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, frozenset(s.labels.items()))
                assert key not in self.samples, f"duplicated series {s.name}{s.labels}"
                self.samples[key] = s.value

    def value(self, name: str, **labels) -> float:
        """The sum over series of ``name`` whose labels include ``labels`` (0 when none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def has(self, name: str, **labels) -> bool:
        want = set(labels.items())
        return any(n == name and want <= ls for (n, ls) in self.samples)


def scrape(system) -> Scrape:
    r = system.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return Scrape(r.text)


@pytest.fixture(scope="module")
def world(system, mailbox):
    t, units = tree(UID)
    codes, doc = village_data_set(UID)
    doc["orgUnits"] = units
    doc["focalPoints"] = [{"code": f"SUP{UID}", "name": "Supervisor", "orgUnit": t.province, "role": "supervisor",
                           "email": "sup@example.la", "language": "en"}]
    system.import_metadata(doc)
    token = system.create_user(f"rep-{UID}", "reporter", t.province)
    return t, codes, token


def test_every_metric_moves_with_the_flow(system, world, settings, mailbox):
    t, codes, token = world
    ds = codes["ds"]
    before = scrape(system)
    # a closed set of labels is there from the start, at 0 where nothing happened yet
    for service in ("submission", "validation", "aggregation", "registry", "notify"):
        assert before.has("statnet_dead_letters_total", service=service), service
    for result in ("imported", "updated", "ignored", "deleted"):
        assert before.has("statnet_data_values_total", result=result), result
    for importance in ("HIGH", "MEDIUM", "LOW"):
        assert before.has("statnet_validation_violations_total", importance=importance), importance
    for kind in ("INVALID_RETURN", "LATE_RETURN", "REMINDER", "LATE_DIGEST"):
        for status in ("SENT", "FAILED", "RETRY"):
            assert before.has("statnet_notifications_total", type=kind, channel="email", status=status), kind

    # an accepted return, a correction of it, one with a MEDIUM warning, one rejected, a dry run
    v1, v2, v3 = t.all_villages[:3]
    ids = [system.submit(village_return(codes, v1, YEAR, 10, 12, 5), token=token).json()["id"]]
    system.wait_status(ids[0])
    ids.append(system.submit({"dataSet": ds, "period": YEAR, "orgUnit": v1, "dataValues": [
        {"dataElement": codes["pop"], "categoryOptionCombo": "M", "value": "11"},
        {"dataElement": codes["hh"], "value": ""}]}, token=token).json()["id"])
    ids.append(system.submit(village_return(codes, v2, YEAR, 1, 1, 9), token=token).json()["id"])
    ids.append(system.submit(village_return(codes, v3, YEAR, 0, 0), token=token).json()["id"])
    statuses = [system.wait_status(i)["status"] for i in ids]
    assert statuses == ["AGGREGATED", "AGGREGATED", "AGGREGATED", "REJECTED"]
    r = system.post("/api/dataValueSets?dryRun=true", json=village_return(codes, v3, YEAR, 1, 1), token=token)
    assert r.status_code == 200
    assert system.post("/api/dataValueSets", json={"dataSet": "NOPE"}, token=token).status_code == 400

    # a deadline check after the year's on-time window: the rejected and the silent village are late
    report = system.post(f"/api/deadlines/check?asOf={int(YEAR) + 1}-03-01").json()
    # v3 rejected, v4 silent, of four villages
    assert {"dataSet": ds, "late": 2, "due": 0, "expected": 4} in report["dataSets"]
    wait_until(lambda: all(n["status"] == "SENT" for n in
                           system.get(f"/api/notifications?recipient=SUP{UID}").json()["notifications"]),
               message="alerts sent")

    # a poison event among them: aggregation parks it
    with Connection(settings.amqp_uri) as conn:
        conn.Producer().publish({"not": "an event"}, exchange=topology.events_exchange("validation"),
                                routing_key="return_validated", serializer="json")

    def after() -> Scrape | None:
        s = scrape(system)
        return s if s.value("statnet_dead_letters_total", service="aggregation") > \
            before.value("statnet_dead_letters_total", service="aggregation") else None

    now = wait_until(after, message="the poison counted")

    def moved(name, by=None, **labels):
        delta = now.value(name, **labels) - before.value(name, **labels)
        assert (delta == by) if by is not None else delta > 0, (name, labels, delta)

    # CONTRACT 8
    moved("statnet_submissions_total", 4, status="RECEIVED")
    moved("statnet_submissions_total", 3, status="VALIDATED")
    moved("statnet_submissions_total", 1, status="REJECTED")
    moved("statnet_submissions_total", 3, status="AGGREGATED")
    moved("statnet_data_values_total", 3 + 3, result="imported")
    moved("statnet_data_values_total", 1, result="updated")
    moved("statnet_data_values_total", 1, result="deleted")
    moved("statnet_data_values_total", 2, result="ignored")  # the rejected return's two, as its importCount says
    moved("statnet_validation_violations_total", 1, importance="HIGH")
    moved("statnet_validation_violations_total", importance="MEDIUM")
    assert now.value("statnet_late_returns", dataset=ds) == 2
    assert now.value("statnet_expected_returns", dataset=ds) == 4
    moved("statnet_notifications_total", type="LATE_RETURN", channel="email", status="SENT")
    moved("statnet_notifications_total", type="INVALID_RETURN", channel="email", status="SENT")
    for service, event in (("validation", "return_received"), ("aggregation", "return_validated"),
                           ("submission", "return_aggregated"), ("notify", "return_rejected")):
        moved("statnet_event_handler_seconds_count", service=service, event=event)
    moved("statnet_dead_letters_total", 1, service="aggregation")

    # issue 10: HTTP, RPC, handlers, queues, outbox, domain gauges
    moved("statnet_http_requests_total", 4, method="POST", route="/api/dataValueSets", status="202")
    moved("statnet_http_requests_total", 1, method="POST", route="/api/dataValueSets", status="400")
    moved("statnet_http_request_seconds_count", method="GET", route="/api/submissions/<return_id>")
    moved("statnet_rpc_seconds_count", service="submission", method="receive")
    moved("statnet_rpc_seconds_count", 1, service="validation", method="check_return")  # the dry run
    moved("statnet_rpc_seconds_count", service="notify", method="check_deadlines")
    moved("statnet_returns_received_total", 4, dataset=ds, period=YEAR)
    moved("statnet_outbox_published_total", service="submission")
    for service in ("registry", "submission", "validation", "aggregation", "notify"):
        assert now.has("statnet_outbox_backlog", service=service)
        assert now.has("statnet_outbox_oldest_seconds", service=service)
    queue = topology.event_queue_name("submission", "return_received", "validation", "validate_return")
    assert now.value("statnet_queue_consumers", queue=queue) >= 1
    assert now.has("statnet_queue_messages", queue=topology.dlq_name("aggregation"))
    assert now.value("statnet_queue_messages", queue=topology.dlq_name("aggregation")) >= 1
    # v1 and v2 accepted of four villages, for the reporting period (last year)
    # (the gauge is computed at most every 10 s)
    now = wait_until(lambda: (lambda s: s if s.value("statnet_completeness_rate", dataset=ds, org_unit=t.country,
                                                     period=YEAR, deadline=deadline()) == 0.5 else None)(scrape(system)),
                     timeout=30, message="completeness gauge at 50%")
    assert now.has("statnet_completeness_on_time_rate", dataset=ds, org_unit=t.country, period=YEAR)


def test_a_service_alone_serves_its_own_metrics_port(settings):
    port = free_port()
    proc = StatnetProcess(settings, services=("validation",), http_address=f"127.0.0.1:{free_port()}",
                          name="validation-alone", STATNET_METRICS_PORT=port)
    proc.start(wait=False)
    try:
        def metrics():
            try:
                r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                return r.text if "statnet_outbox_backlog" in r.text else None
            except requests.ConnectionError:
                return None

        text = wait_until(metrics, timeout=60, message="validation's own /metrics")
        s = Scrape(text)
        assert s.has("statnet_outbox_backlog", service="validation")
        assert not s.has("statnet_outbox_backlog", service="submission")  # only its own
        assert not s.has("statnet_queue_messages")                        # the gateway's job
        # and its health beside them; nothing else (every path answered the metrics, 200)
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code == 200 and health.json() == {
            "status": "ok", "checks": {"database": "ok", "broker": "ok"}}
        other = requests.get(f"http://127.0.0.1:{port}/anything", timeout=5)
        assert other.status_code == 404 and "statnet_" not in other.text
    finally:
        proc.terminate()
        proc.close()


def test_a_service_that_cannot_reach_its_database_says_so(backend, settings):
    """PostgreSQL refusing a service's connections: its /metrics still answers, and says
    ``statnet_database_up 0`` (every gauge read from the database had vanished, silently:
    no alert could fire); once the database is back, 1 again."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from shared.db import engine_for_maintenance, sqlalchemy_url

    db = backend.new_database()
    name = make_url(sqlalchemy_url(db)).database
    admin = engine_for_maintenance(make_url(sqlalchemy_url(db)))
    port = free_port()
    proc = StatnetProcess(settings, services=("validation",), http_address=f"127.0.0.1:{free_port()}",
                          name="validation-db-down", STATNET_METRICS_PORT=port, DATABASE_URL=db)

    def database_up(expected: float):
        def scraped():
            try:
                s = Scrape(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            except requests.ConnectionError:
                return None
            return s if s.has("statnet_database_up", service="validation") and \
                s.value("statnet_database_up", service="validation") == expected else None
        return wait_until(scraped, timeout=60, message=f"statnet_database_up {expected}")

    def allow(yes: bool):
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(yes).lower()}'))
            if not yes:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :n"), {"n": name})

    proc.start(wait=False)
    try:
        assert database_up(1).has("statnet_outbox_backlog", service="validation")
        allow(False)
        down = database_up(0)
        assert not down.has("statnet_outbox_backlog", service="validation")  # what it could not read
        assert proc.proc.poll() is None                                        # still serving
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code == 503 and health.json()["checks"]["database"].startswith("unreachable")
        allow(True)
        assert database_up(1).has("statnet_outbox_backlog", service="validation")
    finally:
        proc.terminate()
        proc.close()
        allow(True)
        admin.dispose()
        backend.drop_database(db)


def test_statnet_status_shows_the_network_on_one_screen(system, world, settings):
    t, codes, _ = world
    done = cli(settings, "status")
    lines = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    for service in ("gateway", "registry", "submission", "validation", "aggregation", "notify"):
        assert lines[service][1] == "up", done.stdout
    # the poison of the first test sits in aggregation's dead-letter queue: not healthy
    assert lines["aggregation"][3] == "1" and done.returncode == 1, done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.split()[:3] == [codes["ds"], t.country, YEAR]]
    assert [row[3:5] for row in rows] == [[deadline(), "50%"]], done.stdout


def test_a_status_reached_after_a_later_one_is_counted_once(system, settings):
    """Services running apart: aggregation's ``return_aggregated`` may reach submission before
    validation's ``return_validated`` for the same return. VALIDATED is still counted, once;
    a status event sent again under a new event id counts nothing."""
    import uuid

    import sqlalchemy as sa

    from shared.db import engine_for
    from shared.events import envelope

    t, units = tree("OVT")
    codes, doc = village_data_set("OVT")
    doc["orgUnits"] = units
    system.import_metadata(doc)
    village, return_id = t.all_villages[0], f"overtaken-{uuid.uuid4()}"
    with engine_for(settings.database_url).begin() as conn:  # a return received, as intake stores one
        seq = conn.execute(sa.text("""
            INSERT INTO submission.return (id, data_set, org_unit, period, submitted_by, received_at, on_time,
                                           status, status_rank, content_type, body_sha256, body,
                                           data_values, value_count)
            VALUES (:id, :ds, :ou, '2024', 'test', now(), true, 'RECEIVED', 0, 'application/json', 'x', '{}',
                    '[]', 0) RETURNING seq"""), {"id": return_id, "ds": codes["ds"], "ou": village}).scalar()
    ref = {"return_id": return_id, "data_set": codes["ds"], "org_unit": village, "period": "2024"}
    aggregated = envelope("aggregation", "return_aggregated", {
        **ref, "import_count": {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0},
        "aggregated_at": dt.datetime.now(dt.timezone.utc)})
    validated = envelope("validation", "return_validated", {
        **ref, "seq": seq, "received_at": dt.datetime.now(dt.timezone.utc), "on_time": True,
        "submitted_by": "test", "values": [], "violations": []})

    def publish(message):
        with Connection(settings.amqp_uri) as conn:
            conn.Producer().publish(message, exchange=topology.events_exchange(message["source"]),
                                    routing_key=message["event_type"], serializer="json")

    def counted(status):
        return scrape(system).value("statnet_submissions_total", status=status)

    before = {s: counted(s) for s in ("VALIDATED", "AGGREGATED")}
    publish(aggregated)
    wait_until(lambda: system.get(f"/api/submissions/{return_id}").json()["status"] == "AGGREGATED",
               message="AGGREGATED first")
    publish(validated)  # validation's event, overtaken
    wait_until(lambda: counted("VALIDATED") == before["VALIDATED"] + 1, message="VALIDATED counted")
    publish({**validated, "event_id": str(uuid.uuid4())})  # the same status again, under a new id
    publish({**aggregated, "event_id": str(uuid.uuid4())})
    time.sleep(2)
    assert counted("VALIDATED") == before["VALIDATED"] + 1
    # (aggregation, given the validated return, aggregated it again: a status it had already)
    assert counted("AGGREGATED") == before["AGGREGATED"] + 1
    assert system.get(f"/api/submissions/{return_id}").json()["status"] == "AGGREGATED"
