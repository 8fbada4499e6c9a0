"""`statnet dlq list/replay/drop` on a real broker: a dead letter that cannot go back (no origin
queue named, or one that no longer exists) stays where it is and the ones behind it are
replayed; the listing says how many the queue holds, not how many it printed."""
from __future__ import annotations

import base64
import json

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


def test_dropped_dead_letters_are_kept_in_the_archive_and_the_rest_stay_in_order(settings, tmp_path):
    """`statnet dlq drop`: by the id `dlq list` shows (the name a letter was parked under,
    else its event's id), or every one; each written to the archive, whole, before the
    queue lets go of it."""
    with Connection(settings.amqp_uri) as conn:
        channel = conn.channel()
        dlq = topology.dlq(SERVICE, settings)(channel)
        dlq.declare()
        producer = conn.Producer(channel)
        letters = [  # (headers, body, content type)
            ({topology.DEAD_LETTER_ID_HEADER: "parked-1", topology.ERROR_HEADER: "boom"},
             '{"event_id": "ev-1", "text": "ບ້ານນ້ຳທາ"}', "application/json"),
            ({}, '{"event_id": "ev-2"}', "application/json"),     # parked before letters had names
            ({topology.DEAD_LETTER_ID_HEADER: "parked-3"}, b"\xff\xfe not text", "application/octet-stream"),
            ({topology.DEAD_LETTER_ID_HEADER: "parked-4"}, '{"event_id": "ev-4"}', "application/json"),
        ]
        for headers, body, content_type in letters:
            producer.publish(body, exchange="", routing_key=dlq.name, headers=headers,
                             content_type=content_type, content_encoding="binary" if isinstance(body, bytes)
                             else "utf-8")
    archive_path = tmp_path / "dropped.jsonl"
    try:
        listed, _ = topology.dlq_list(settings, SERVICE)
        assert [m["id"] for m in listed] == ["parked-1", "ev-2", "parked-3", "parked-4"]

        with open(archive_path, "a", encoding="utf-8") as archive:
            dropped, missing = topology.dlq_drop(settings, SERVICE, {"parked-1", "parked-3", "ev-2", "no-such"},
                                                 archive)
        assert (dropped, missing) == (3, {"no-such"})
        kept = [json.loads(line) for line in archive_path.read_text(encoding="utf-8").splitlines()]
        assert [k["id"] for k in kept] == ["parked-1", "ev-2", "parked-3"]
        assert kept[0]["error"] == "boom" and json.loads(kept[0]["body"])["text"] == "ບ້ານນ້ຳທາ"
        assert base64.b64decode(kept[2]["body_base64"]) == b"\xff\xfe not text"
        remaining, waiting = topology.dlq_list(settings, SERVICE)
        assert waiting == 1 and [m["id"] for m in remaining] == ["parked-4"]

        with open(archive_path, "a", encoding="utf-8") as archive:  # appended, not overwritten
            assert topology.dlq_drop(settings, SERVICE, None, archive) == (1, set())
        assert len(archive_path.read_text(encoding="utf-8").splitlines()) == 4
        assert topology.dlq_list(settings, SERVICE)[1] == 0
    finally:
        with Connection(settings.amqp_uri) as conn:
            conn.channel().queue_delete(topology.dlq_name(SERVICE))
