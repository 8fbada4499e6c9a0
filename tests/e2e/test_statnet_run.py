"""``statnet run`` as its own process, driven over HTTP only, like a district system would."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port
from tests.support.builders import tree, village_data_set, village_return
from tests.support.client import Api, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def statnet_process(settings):
    env = {**os.environ, "AMQP_URI": settings.amqp_uri, "DATABASE_URL": settings.database_url,
           "STATNET_HTTP": settings.http_address, "STATNET_ADMIN_TOKEN": settings.admin_token,
           "SMTP_PORT": str(free_port()), "STATNET_LOG_FORMAT": "json"}
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"statnet-e2e-{os.getpid()}.log"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "run"], env=env, stdout=log, stderr=log)
    api = Api(f"http://{settings.http_address}", settings.admin_token)

    def up():
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"statnet run exited with {proc.returncode}:\n{log.read()[-4000:]}")
        try:
            return api.get("/health").status_code == 200
        except Exception:
            return False

    wait_until(up, timeout=60, interval=0.2, message="statnet run to answer /health")
    yield api, proc, log
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    os.unlink(log.name)


def test_a_village_return_travels_village_district_province(statnet_process):
    api, _, _ = statnet_process
    t, units = tree("E2E", districts=2, villages=2)
    codes, doc = village_data_set("E2E", rules=False)
    doc["orgUnits"] = units
    assert api.post("/api/metadata", json=doc).json()["status"] == "OK"
    district = t.districts[1]
    token = api.create_user("e2e-district-reporter", "reporter", district)

    village_a, village_b = t.villages[district]
    first = api.submit(village_return(codes, village_a, "2025", 300, 310, 120), token=token)
    second = api.submit(village_return(codes, village_b, "2025", 200, 190, 80), token=token)
    assert first.status_code == second.status_code == 202
    for r in (first, second):
        assert api.wait_status(r.json()["id"])["status"] == "AGGREGATED"

    totals = api.analytics(codes["pop"], f"{village_a};{district};{t.province};{t.country}", "2025")
    assert totals[(codes["pop"], village_a, "2025")] == 610
    assert totals[(codes["pop"], district, "2025")] == 1000
    assert totals[(codes["pop"], t.province, "2025")] == 1000
    assert totals[(codes["pop"], t.country, "2025")] == 1000


def test_one_grep_follows_a_return_through_every_service(statnet_process):
    api, _, log = statnet_process
    t, units = tree("LOG", districts=1, villages=1)
    codes, doc = village_data_set("LOG", rules=False)
    doc["orgUnits"] = units
    api.import_metadata(doc)
    r = api.submit(village_return(codes, t.all_villages[0], "2025", 3, 4), token=None)
    return_id = r.json()["id"]
    assert api.wait_status(return_id)["status"] == "AGGREGATED"

    def lines():
        log.flush()
        with open(log.name, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.startswith("{")]  # every line is one JSON object
        mine = [rec for rec in records if rec.get("correlation_id") == return_id]
        services = {rec.get("service") for rec in mine}
        return mine if {"submission", "validation", "aggregation", "registry"} <= services else None

    wait_until(lines, timeout=10, message="log lines of the return from every service")


def test_sigterm_stops_statnet_cleanly(settings, statnet_process):
    _, proc, _ = statnet_process
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert proc.wait(30) == 0
    assert time.monotonic() - started < 30
