"""The outbox relay's publisher (shared.confirms) on the real broker: a batch is
confirmed only when every message of it is on a queue."""
from __future__ import annotations

import pytest
from kombu import Connection, Exchange, Queue

from shared.confirms import ConfirmedBatches, Outgoing, Unconfirmed, Unroutable

EXCHANGE = Exchange("confirms-test", type="topic", durable=True)
QUEUE = Queue("confirms-test-q", exchange=EXCHANGE, routing_key="bound", durable=True)


@pytest.fixture
def broker(settings):
    with Connection(settings.amqp_uri) as conn:
        QUEUE.bind(conn.default_channel).declare()
        QUEUE.bind(conn.default_channel).purge()
    publisher = ConfirmedBatches(settings.amqp_uri)
    yield settings.amqp_uri, publisher
    publisher.close()


def _message(i: int, key: str = "bound") -> Outgoing:
    return Outgoing(f'{{"n": {i}, "text": "ລາຍງານ"}}'.encode(), EXCHANGE.name, key,
                    {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
                     "message_id": f"m{i}"})


def _drain(uri: str) -> list:
    got = []
    with Connection(uri) as conn:
        q = QUEUE.bind(conn.default_channel)
        while (m := q.get(no_ack=True)) is not None:
            got.append(m)
    return got


def test_a_confirmed_batch_is_on_the_queue_in_order_with_its_properties(broker):
    uri, publisher = broker
    publisher.publish([_message(i) for i in range(300)])
    publisher.publish([_message(i) for i in range(300, 310)])  # the tags go on counting
    got = _drain(uri)
    assert [m.properties["message_id"] for m in got] == [f"m{i}" for i in range(310)]
    assert got[0].payload == {"n": 0, "text": "ລາຍງານ"}  # Lao text intact
    assert got[0].properties["delivery_mode"] == 2 and got[0].content_type == "application/json"


def test_a_batch_with_an_unroutable_message_fails(broker):
    uri, publisher = broker
    with pytest.raises(Unroutable, match="nowhere"):
        publisher.publish([_message(1), _message(2, key="nowhere"), _message(3)])
    # the channel is still usable: the relay keeps its rows and tries again later
    publisher.publish([_message(4)])
    assert [m.properties["message_id"] for m in _drain(uri)][-1] == "m4"


def test_a_lost_connection_fails_the_batch_and_the_next_one_reconnects(broker):
    uri, publisher = broker
    publisher.publish([_message(1)])
    publisher.kombu.connection.sock.close()  # the broker's end went away
    with pytest.raises(Unconfirmed):
        publisher.publish([_message(2)])
    publisher.publish([_message(3)])
    assert [m.properties["message_id"] for m in _drain(uri)][-1] == "m3"


def test_an_idle_publisher_keeps_its_connection(broker):
    """The relay calls ``heartbeat()`` every second while nothing is published. It sent its
    own heartbeats but never read the broker's, so after two intervals py-amqp judged the
    broker's missed and the connection was dropped and opened again: a soak run logged
    "Too many heartbeats missed" two minutes after every quiet spell began."""
    import time

    uri, _ = broker
    publisher = ConfirmedBatches(uri, heartbeat=2)
    try:
        publisher.publish([_message(1)])
        connection = publisher.kombu
        idle_until = time.monotonic() + 7  # past two heartbeat intervals, twice
        while time.monotonic() < idle_until:
            publisher.heartbeat()
            time.sleep(0.25)
        assert publisher.kombu is connection, "the idle connection was dropped"
        publisher.publish([_message(2)])
    finally:
        publisher.close()
    assert [m.properties["message_id"] for m in _drain(uri)][-2:] == ["m1", "m2"]
