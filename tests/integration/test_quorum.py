"""STATNET_QUEUE_TYPE=quorum: the same flow on quorum queues, with a delivery limit."""
from __future__ import annotations

import subprocess

import pytest

from shared import topology
from tests.support.builders import tree, village_data_set, village_return


@pytest.fixture(scope="module")
def settings(settings):
    return settings.replace(queue_type="quorum", delivery_limit=5)


def test_quorum_queues_carry_the_whole_flow(system, settings, backend):
    t, units = tree("QQ", districts=1, villages=1)
    codes, doc = village_data_set("QQ", rules=False)
    doc["orgUnits"] = units
    system.import_metadata(doc)
    r = system.submit(village_return(codes, t.all_villages[0], "2024", 4, 5))
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    assert system.analytics(codes["pop"], t.province, "2024") == {(codes["pop"], t.province, "2024"): 9}

    vhost = settings.amqp_uri.rsplit("/", 1)[1]
    listed = subprocess.run(backend.rabbitmqctl + ["list_queues", "-p", vhost, "name", "type", "arguments",
                                                   "durable"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines() if line.startswith(("evt-", "statnet.dlq"))]
    # each gateway's own queue of user_changed goes with it: classic (a quorum queue is
    # durable, never exclusive), and the only queue not declared with the topology
    own = topology.event_queue_name("registry", "user_changed", "gateway", "forget_changed_user") + "-"
    assert [(row[1], row[3]) for row in rows if row[0].startswith(own)] == [("classic", "false")], rows
    rows = [row for row in rows if not row[0].startswith(own)]
    assert rows and all(row[1] == "quorum" and row[3] == "true" for row in rows), rows
    event_queues = [row for row in rows if row[0].startswith("evt-")]
    assert all("x-delivery-limit" in row[2] and "statnet.dlq" in row[2] for row in event_queues)


def test_a_vhost_set_up_with_quorum_queues_refuses_classic_in_words(system, settings):
    """STATNET_QUEUE_TYPE changed on a vhost statnet already ran on: RabbitMQ cannot change a
    queue's type, and the broker's 406 came out of `statnet run` as a traceback."""
    from tests.support.processes import cli

    done = cli(settings, "run", "validation", timeout=90)  # cli's environment: the default, classic
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "STATNET_QUEUE_TYPE=classic" in done.stderr and "exists on the broker" in done.stderr, done.stderr
    assert "x-queue-type" in done.stderr  # the broker's own words, naming the argument
