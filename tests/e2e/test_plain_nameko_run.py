"""CONTRACT 1: each service can also run alone by plain ``nameko run``. Validation
started so (with ``deploy/nameko.yaml``, as the README says) beside ``statnet run``
of every other service, on a database nobody has migrated: it prepares its own schema
as ``statnet run`` would, and a return goes through it to AGGREGATED. Started without
that config it would dead-letter every event (nameko's plain ``json`` cannot read
statnet's wire format): it refuses to start instead, saying how to run it."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.support.builders import tree, village_data_set, village_return
from tests.support.client import wait_until
from tests.support.processes import ROOT, StatnetProcess

pytestmark = pytest.mark.e2e

UID = "NMK"
NAMEKO = str(pathlib.Path(sys.executable).parent / "nameko")


METRICS_PORT = 8769


def plain_nameko(settings, *config, stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "AMQP_URI": settings.amqp_uri, "DATABASE_URL": settings.database_url,
           "STATNET_LOG_FORMAT": "json", "STATNET_DEADLINE_CHECK_SECONDS": "86400",
           "STATNET_METRICS_PORT": str(METRICS_PORT)}
    return subprocess.Popen([NAMEKO, "run", *config, "services.validation.service:ValidationService"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)


def consumers(settings, queue: str) -> int:
    from shared import topology

    return topology.queue_depths(settings, [queue])[queue][1]


def test_validation_by_plain_nameko_run(settings, tmp_path):
    log = open(tmp_path / "validation.log", "wb")
    # first: it migrates its own schema
    validation = plain_nameko(settings, "--config", "deploy/nameko.yaml", stderr=log)
    rest = StatnetProcess(settings, services=("gateway", "registry", "submission", "aggregation", "notify"),
                          name="all-but-validation").start()
    try:
        queue = "evt-submission-return_received--validation.validate_return"
        wait_until(lambda: validation.poll() is None and consumers(settings, queue) == 1, timeout=60,
                   message="plain nameko's validation consuming")
        t, units = tree(UID)
        codes, doc = village_data_set(UID)
        doc["orgUnits"] = units
        rest.api.import_metadata(doc)
        sent = rest.api.submit(village_return(codes, t.villages[t.districts[0]][0], "2025", 3, 4))
        assert sent.status_code == 202, sent.text
        assert rest.api.wait_status(sent.json()["id"], timeout=60)["status"] == "AGGREGATED"
        # seen by Prometheus as `statnet run validation` is, and logging as it does
        import json

        import requests

        metrics = requests.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        assert 'statnet_event_handler_seconds_count{event="return_received",service="validation"}' in metrics
        lines = [line for line in (tmp_path / "validation.log").read_text().splitlines() if line.startswith("{")]
        assert lines and all("message" in json.loads(line) for line in lines)
    finally:
        log.close()
        validation.terminate()
        try:
            validation.wait(30)
        except subprocess.TimeoutExpired:
            validation.kill()
        rest.close()


def test_plain_nameko_run_without_statnets_config_refuses_to_start(settings):
    bare = plain_nameko(settings)
    try:
        _, err = bare.communicate(timeout=60)
    finally:
        bare.kill()
    assert bare.returncode != 0
    assert b"nameko run --config deploy/nameko.yaml" in err
