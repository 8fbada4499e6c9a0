"""`statnet dlq list/replay` on a real broker: a dead letter that cannot go back (no origin
queue named, or one that no longer exists) stays where it is and the ones behind it are
replayed; the listing says how many the queue holds, not how many it printed."""
from __future__ import annotations

from kombu import Connection, Queue

from shared import topology

SERVICE = "replayprobe"


def test_a_dead_letter_that_cannot_go_back_stays_in_place_and_the_rest_are_replayed(settings):
    target = Queue("replay-target-probe", durable=True)
    with Connection(settings.amqp_uri) as conn:
        channel = conn.channel()
        dlq = topology.dlq(SERVICE, settings)(channel)
        dlq.declare()
        target(channel).declare()
        producer = conn.Producer(channel)
        for n, origin in enumerate((None, "evt-gone-after-an-upgrade", target.name, target.name)):
            headers = {topology.ORIGIN_QUEUE_HEADER: origin} if origin else {}
            producer.publish({"n": n, "text": "ບ້ານ"}, exchange="", routing_key=dlq.name, headers=headers,
                             serializer="json")
    try:
        listed, waiting = topology.dlq_list(settings, SERVICE, limit=1)
        assert (len(listed), waiting) == (1, 4)

        moved, left = topology.dlq_replay(settings, SERVICE)
        assert moved == 2 and len(left) == 2, left
        assert left[0].startswith("no origin queue") and "evt-gone-after-an-upgrade" in left[1]
        # the two left are still there, in their order; the two replayed arrived
        remaining, waiting = topology.dlq_list(settings, SERVICE)
        assert waiting == 2 and [m["origin_queue"] for m in remaining] == [None, "evt-gone-after-an-upgrade"]
        assert topology.queue_depths(settings, [target.name])[target.name][0] == 2
    finally:
        with Connection(settings.amqp_uri) as conn:
            channel = conn.channel()
            channel.queue_delete(target.name)
            channel.queue_delete(topology.dlq_name(SERVICE))
