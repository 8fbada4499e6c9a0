"""The shape of the system: who owns which tables, which events reach whom, and that
the deploy files say what the code does."""
from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml

from services.runner import ALL, service_classes
from shared import asyncapi, topology
from shared.config import Settings
from shared.events import CATALOGUE

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ("registry", "submission", "validation", "aggregation", "notify")


def _tables_of(schema: str) -> set[str]:
    module = __import__(f"services.{schema}.tables", fromlist=["metadata"])
    return {t.name for t in module.metadata.tables.values()}


@pytest.mark.parametrize("service", ALL)
def test_no_service_touches_another_services_tables(service):
    """Each service owns one schema; reading another's tables would couple their releases."""
    others = {s: _tables_of(s) for s in SCHEMAS if s != service}
    offences = []
    for path in (ROOT / "services" / service).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for other, tables in others.items():
            if re.search(rf"\bservices\.{other}\.tables\b|from services\.{other} import tables", text):
                offences.append(f"{path.name} imports services.{other}.tables")
            for table in tables:
                if re.search(rf"\b{other}\.{table}\b", text) and table not in ("outbox", "inbox"):
                    offences.append(f"{path.name} names {other}.{table}")
                if table in ("outbox", "inbox") and re.search(rf"[\"' ]{other}\.{table}\b", text):
                    offences.append(f"{path.name} names {other}.{table}")
    assert offences == []


def test_each_service_schema_has_migrations():
    for schema in SCHEMAS:
        versions = list((ROOT / "services" / schema / "migrations" / "versions").glob("0*.py"))
        assert versions, f"{schema} has no migrations"


def test_every_event_has_a_consumer_and_every_subscription_an_event():
    # mandatory publishing: an event nobody consumes would be unroutable and stall the outbox;
    # so would one only each instance's own queue takes (none while no instance runs)
    subscribed = {(s, e) for cls in service_classes().values()
                  for s, e, _ in topology.subscriptions(cls, broadcast=False)}
    assert set(CATALOGUE) - subscribed == set()
    assert subscribed - set(CATALOGUE) == set()


def test_asyncapi_document_is_current():
    committed = (ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8")
    assert committed == asyncapi.document(service_classes().values()), \
        "regenerate with: statnet asyncapi > docs/asyncapi.json"


def test_rabbitmq_definitions_are_current():
    committed = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text(encoding="utf-8"))
    assert committed == topology.definitions(service_classes().values(), Settings()), \
        "regenerate with: statnet topology > deploy/rabbitmq/definitions.json"


def test_reference_metadata_file_is_the_generators_output():
    from services.registry import reference

    assert pathlib.Path(reference.path()).read_text(encoding="utf-8") == reference.dumps(), \
        "regenerate with: python -m services.registry.reference > services/registry/data/luang_namtha.json"


# ----------------------------------------------------------------- docker compose

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]


def test_compose_runs_every_statnet_service_from_one_image():
    for name in ALL:
        svc = SERVICES[name]
        assert svc["command"] == ["statnet", "run", name]
        assert svc["build"] == "."
    assert {"rabbitmq", "postgres", "prometheus"} <= set(SERVICES)


# what an operator must set (``${X:?message}``) stands in as a value of the right form
_REQUIRED = {"STATNET_REPORTING_START": "2027-01-01"}


def _interpolated(value: str) -> str:
    """A compose value as compose would read it with nothing set but what it requires:
    ``${X:-default}`` its default, ``${X:?message}`` (must be set) a stand-in."""
    return re.sub(r"\$\{(\w+):([-?])([^}]*)\}",
                  lambda m: m.group(3) if m.group(2) == "-" else _REQUIRED.get(m.group(1), "x"), value)


def test_compose_environment_matches_the_contracts_settings():
    known = set(Settings.ENV.values())
    for name in ALL:
        env = SERVICES[name]["environment"]
        assert set(env) <= known, f"{name}: unknown settings {set(env) - known}"
        assert env["AMQP_URI"].startswith("amqp://") and "@rabbitmq:5672" in env["AMQP_URI"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert "STATNET_ADMIN_TOKEN" in env and "SMTP_HOST" in env and "SMTP_PORT" in env
        Settings.from_env({k: _interpolated(str(v)) for k, v in env.items()})  # parses
    gateway = SERVICES["gateway"]
    port = Settings.from_env({"STATNET_HTTP": gateway["environment"]["STATNET_HTTP"]}).http_port
    assert f"{port}:{port}" in gateway["ports"]


def test_compose_publishes_the_gateway_alone_and_keeps_the_brokers_messages():
    # the broker published with a known login let anyone reaching the server publish events
    # into the totals; the operators' pages are theirs (127.0.0.1, by an SSH tunnel)
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert name == "gateway" or port.startswith("127.0.0.1:"), (name, port)
    rabbit = SERVICES["rabbitmq"]
    assert "guest" not in json.dumps(COMPOSE)
    assert rabbit["environment"]["RABBITMQ_DEFAULT_PASS"].startswith("${RABBITMQ_PASSWORD:?")
    # its data directory is named after the node's hostname: a random one (the container's
    # id) started every recreated broker empty, its queued messages unread in the volume
    assert rabbit["hostname"] and any(v.endswith(":/var/lib/rabbitmq") for v in rabbit["volumes"])


def test_prometheus_scrapes_every_replica_of_every_statnet_service_and_alerts_reach_someone():
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {}  # "name:port" -> the service label its series get
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            targets.update({t: sc.get("labels", {}).get("service") for t in sc["targets"]})
        # a scaled service (docker compose up --scale) is every address its name resolves to
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A", job
            service = [r["replacement"] for r in job["relabel_configs"] if r["target_label"] == "service"]
            targets.update({f"{n}:{sd['port']}": service[0] for n in sd["names"]})
    for name in ALL:
        env = SERVICES[name]["environment"]
        port = (Settings.from_env({"STATNET_HTTP": env["STATNET_HTTP"]}).http_port if name == "gateway"
                else int(env["STATNET_METRICS_PORT"]))
        assert targets.get(f"{name}:{port}") == name, (name, targets)
        if name != "gateway":  # (one gateway owns the HTTP address; the others scale)
            job = next(j for j in prom["scrape_configs"] if j["job_name"] == f"statnet-{name}")
            assert "dns_sd_configs" in job and "static_configs" not in job, job
    # the rules' alerts go to an Alertmanager compose runs, with the config beside this one
    (manager,) = [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    host, port = manager.split(":")
    assert f"127.0.0.1:{port}:{port}" in SERVICES[host]["ports"]  # (its pages: the server's operators')
    assert any(v.startswith("./deploy/alertmanager.yml:") for v in SERVICES[host]["volumes"])
    smarthost = yaml.safe_load((ROOT / "deploy" / "alertmanager.yml").read_text(encoding="utf-8"))["global"]["smtp_smarthost"]
    assert smarthost.split(":")[0] in SERVICES, smarthost


def test_the_definitions_are_for_the_vhost_amqp_uri_names():
    from services.runner import service_classes
    from shared import topology
    from shared.config import Settings

    doc = topology.definitions(service_classes().values(),
                               Settings(amqp_uri="amqp://guest:guest@127.0.0.1:5672/luangnamtha"))
    assert {x["vhost"] for kind in ("exchanges", "queues", "bindings") for x in doc[kind]} == {"luangnamtha"}
