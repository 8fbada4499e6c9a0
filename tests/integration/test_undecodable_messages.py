"""A message whose body cannot be decoded is parked in the dead-letter queue of every
service it reaches, like one that does not fit its schema: never acknowledged and lost."""
from __future__ import annotations

from kombu import Connection

from shared import topology
from tests.support.client import wait_until

CONSUMERS = ("aggregation", "registry", "submission", "notify")  # of validation's return_validated


def _depths(settings) -> dict:
    names = [topology.dlq_name(s) for s in CONSUMERS]
    return {s: topology.queue_depths(settings, names)[topology.dlq_name(s)][0] for s in CONSUMERS}


def test_bytes_no_one_can_decode_are_dead_lettered(system, settings):
    before = _depths(settings)
    exchange = topology.events_exchange("validation")
    with Connection(settings.amqp_uri) as conn:
        producer = conn.Producer()
        for body, content_type in ((b'{"return_id": "\xff\xfe"}', "application/json"),
                                   (b"\x00\x01", "application/x-weird")):
            producer.publish(body, exchange=exchange, routing_key="return_validated", content_type=content_type,
                             content_encoding="utf-8" if content_type == "application/json" else "binary",
                             declare=[exchange])
    wait_until(lambda: all(n >= before[s] + 2 for s, n in _depths(settings).items()), timeout=60,
               message="both parked by every consumer")
    with Connection(settings.amqp_uri) as conn:
        channel = conn.channel()
        message = channel.basic_get(topology.dlq_name("aggregation"), no_ack=True)
        assert "cannot be decoded" in message.headers[topology.ERROR_HEADER]
        for service in CONSUMERS:  # leave the queues as other tests expect them
            channel.queue_purge(topology.dlq_name(service))
