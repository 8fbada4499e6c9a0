"""``@subscribe(..., batch=N)`` (shared.events): when batches start, what they carry,
and what happens to the events of a batch that fails. The broker and the container are
stand-ins here; tests/integration/test_aggregation.py runs the real thing."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from shared import metrics
from shared.events import BATCHES_IN_FLIGHT, Subscription, envelope


class Container:
    service_name = "aggregation"

    def __init__(self):
        self.workers = []  # (args, handle_result)

    def spawn_worker(self, entrypoint, args, kwargs, context_data=None, handle_result=None):
        self.workers.append((args, handle_result))


class Broker:
    def __init__(self):
        self.acked, self.requeued = [], []

    def ack_message(self, message):
        self.acked.append(message.n)

    def requeue_message(self, message):
        self.requeued.append(message.n)


def subscription(batch: int | None = 3) -> tuple[Subscription, Container, Broker]:
    sub = Subscription("validation", "return_validated", batch=batch)
    sub.container, sub.queue_consumer, sub.method_name = Container(), Broker(), "aggregate_return"
    sub.histogram = metrics.event_handler_seconds.labels(service="test", event="return_validated")
    sub.batch_sizes = metrics.event_batch_size.labels(service="test", event="return_validated")
    sub.gathering, sub.alone, sub.in_flight = [], [], 0
    failures = []
    sub.handle_failure = lambda message, exc: failures.append((message.n, exc))
    sub.failures = failures
    return sub, sub.container, sub.queue_consumer


def deliver(sub: Subscription, n: int) -> None:
    body = envelope("validation", "return_validated", {
        "return_id": f"r{n}", "seq": n, "data_set": "DS", "org_unit": "V", "period": "202501",
        "received_at": dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc), "on_time": True, "submitted_by": "u",
        "values": [], "violations": []})
    sub.handle_message(body, SimpleNamespace(n=n, headers={}))


def ids(args) -> list[str]:
    return [e.data["return_id"] for e in args[0]]


def finish(container: Container, i: int, exc: BaseException | None = None):
    _, handle_result = container.workers[i]
    handle_result(None, exc_info=None if exc is None else (type(exc), exc, None))


def test_a_quiet_system_runs_each_event_at_once():
    sub, container, broker = subscription()
    deliver(sub, 1)
    assert [ids(a) for a, _ in container.workers] == [["r1"]]
    finish(container, 0)
    assert broker.acked == [1]


def test_events_arriving_while_batches_run_go_together_into_the_next():
    sub, container, broker = subscription(batch=4)
    for n in range(1, 4):
        deliver(sub, n)
    # r1 ran at once; the next batch waits for it, or runs beside it once half a batch
    # (r2, r3) has gathered
    assert BATCHES_IN_FLIGHT == 2
    assert [ids(a) for a, _ in container.workers] == [["r1"], ["r2", "r3"]]
    for n in range(4, 10):
        deliver(sub, n)  # two batches in flight: the rest gather
    assert len(container.workers) == 2
    finish(container, 0)
    # the next batch takes what gathered, up to the batch size
    assert ids(container.workers[2][0]) == ["r4", "r5", "r6", "r7"]
    finish(container, 1)
    assert ids(container.workers[3][0]) == ["r8", "r9"]
    finish(container, 2)
    finish(container, 3)
    assert sorted(broker.acked) == list(range(1, 10)) and broker.requeued == []


def test_under_moderate_load_the_next_batch_waits_for_the_running_one():
    sub, container, broker = subscription(batch=10)
    for n in range(1, 5):
        deliver(sub, n)  # fewer than half a batch behind r1
    assert [ids(a) for a, _ in container.workers] == [["r1"]]
    finish(container, 0)
    assert ids(container.workers[1][0]) == ["r2", "r3", "r4"]
    deliver(sub, 5)      # one batch running: r5 waits for it
    assert len(container.workers) == 2
    finish(container, 1)
    assert ids(container.workers[2][0]) == ["r5"]
    finish(container, 2)
    assert sorted(broker.acked) == [1, 2, 3, 4, 5]


def test_a_failed_batch_runs_each_of_its_events_alone():
    sub, container, broker = subscription(batch=3)
    for n in range(1, 6):
        deliver(sub, n)
    finish(container, 0)          # r1 done
    finish(container, 2, ValueError("r4 is poison"))  # the batch r3, r4, r5 fails: nothing acked
    assert sorted(broker.acked) == [1]
    # each again, alone (two at a time, as any batch)
    assert [ids(a) for a, _ in container.workers[3:]] == [["r3"]]
    finish(container, 1)          # r2 done: room for the next one alone
    assert ids(container.workers[4][0]) == ["r4"]
    finish(container, 3)
    finish(container, 4, ValueError("r4 is poison"))
    finish(container, 5)
    assert ids(container.workers[5][0]) == ["r5"]
    # the poison alone goes to the retry / dead-letter policy; the others are acked
    assert [n for n, _ in sub.failures] == [4]
    assert sorted(broker.acked) == [1, 2, 3, 5]


def test_without_batch_the_handler_gets_the_event_itself():
    sub, container, _ = subscription(batch=None)
    deliver(sub, 1)
    (args, _), = container.workers
    assert args[0].data["return_id"] == "r1"


def test_prefetch_leaves_room_for_the_batches_in_flight_and_one_gathering():
    assert Subscription("validation", "return_validated", batch=25).prefetch_count == 25 * (BATCHES_IN_FLIGHT + 1)
    assert Subscription("validation", "return_validated").prefetch_count is None


@pytest.mark.parametrize("n", [1, 5])
def test_the_handler_time_of_a_batch_is_shared_among_its_events(n):
    sub, container, _ = subscription(batch=10)
    sub.histogram = metrics.event_handler_seconds.labels(service=f"share{n}", event="return_validated")
    sub.in_flight = BATCHES_IN_FLIGHT  # hold the batch back until all n have arrived
    for i in range(n):
        deliver(sub, i)
    sub.in_flight = 0
    sub.start_batches()
    finish(container, 0)
    from prometheus_client import REGISTRY
    labels = {"service": f"share{n}", "event": "return_validated"}
    assert REGISTRY.get_sample_value("statnet_event_handler_seconds_count", labels) == n


def test_batches_take_their_locks_in_the_order_they_were_delivered():
    """The batch delivered first locks first, however long it works before its locks (a
    chaos probe: validation asking aggregation for history let the next batch judge a
    later return first); a batch that fails before its locks lets the next go."""
    import eventlet

    from shared.batches import Turnstile

    turns, order = Turnstile(), []

    def batch(name, work_before, fail=False):
        with turns.turn() as turn:
            eventlet.sleep(work_before)
            if fail:
                raise RuntimeError(name)
            turn.wait()
            order.append(name)
            turn.locked()

    pool = eventlet.GreenPool()
    for name, work, fail in (("first", 0.05, False), ("failing", 0.02, True), ("third", 0.0, False)):
        pool.spawn(batch, name, work, fail)
    pool.waitall()
    assert order == ["first", "third"]


def test_a_batch_killed_while_waiting_for_its_turn_lets_the_next_go():
    """(Killed inside the turn's own cleanup, a failed batch held every later one for ever.)"""
    import eventlet

    from shared.batches import Turnstile

    turns, order = Turnstile(), []

    def slow():
        with turns.turn() as turn:
            eventlet.sleep(0.05)
            turn.wait()
            order.append("slow")
            turn.locked()

    def failing():
        with turns.turn():
            raise RuntimeError("before its locks")

    def next_one():
        with turns.turn() as turn:
            turn.wait()
            order.append("next")
            turn.locked()

    pool = eventlet.GreenPool()
    pool.spawn(slow)
    doomed = pool.spawn(failing)
    pool.spawn(next_one)
    eventlet.sleep(0.01)
    doomed.kill()  # waiting for "slow" in its cleanup
    with eventlet.Timeout(5):  # (a kill ends the order's promise, not the next batch)
        pool.waitall()
    assert sorted(order) == ["next", "slow"]
