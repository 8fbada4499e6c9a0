"""Events: the catalogue, the envelope, and the ``subscribe`` entrypoint.

Every event statnet publishes is listed in ``CATALOGUE`` with its payload
schema and ``schema_version``. Events are published only through a service's
outbox (``shared.delivery``), never directly, so no event leaves for a change
that rolled back.

``subscribe`` replaces nameko's ``event_handler`` with one policy for every
service (nameko's default ACKs a message whose handler raised: the event is
gone):

* the envelope and payload are checked against the catalogue; a message that
  doesn't fit can never succeed and goes straight to the service's dead-letter
  queue;
* a handler that raises is retried later through a delay queue (1 s, 5 s,
  30 s, 2 min, ...), never requeued in a hot loop; transient failures
  (database or broker unreachable, RPC peer down) keep retrying, others go
  to the dead-letter queue after ``HANDLER_ATTEMPTS`` attempts;
* handler time is observed in ``statnet_event_handler_seconds``.

Handlers make their effect idempotent with ``Database.consume(event)``, which
records the event id in the same transaction as the effect.

``@subscribe(..., batch=N)`` hands the handler a *list* of up to N events
(``Database.consume_many``: one transaction, one inbox insert, one outbox
insert for all of them). It is group commit: an event arriving when no
batch runs starts one at once (no waiting for a batch to fill, so a quiet
system answers as fast as before), and events arriving meanwhile go together
into the next, which starts when the running one ends, or beside it once half
a batch has gathered (at most ``BATCHES_IN_FLIGHT`` at a time). Under load a return costs a
share of one transaction instead of one of its own; the per-return handlers
are where the time of a return went (tests/bench/RESULTS.md). A batch that
fails is not retried as a whole: each of its events is run again alone, so one
bad event is retried or dead-lettered by itself and holds back nothing else.

``@subscribe(..., broadcast=True)`` delivers every event to every instance of the
service, each through a queue of its own that goes with it (nameko's BROADCAST):
for what each process keeps to itself, the gateway's token cache. What is
published while an instance is away is not kept for it.
"""
from __future__ import annotations

import datetime as dt
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache, partial

import sqlalchemy.exc
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError as KombuOperationalError
from marshmallow import Schema, ValidationError, fields
from nameko.events import SERVICE_POOL, EventHandler
from nameko.exceptions import ContainerBeingKilled, UnknownService

from shared import metrics, topology
from shared.topology import ATTEMPTS_HEADER
from shared.config import Settings
from shared.schemas import events as ev
from shared.schemas.common import EventSchema

log = logging.getLogger(__name__)

# attempts for a handler failing with a non-transient error before its message
# is dead-lettered; transient failures keep retrying up to TRANSIENT_ATTEMPTS
HANDLER_ATTEMPTS = 3
TRANSIENT_ATTEMPTS = 50  # about 1.5 hours at the longest delay

# batches of one batched subscription running at once, under load: while one commits, the
# next gathers; more would only contend for the same rows and locks
BATCHES_IN_FLIGHT = 2



@dataclass(frozen=True)
class EventType:
    source: str
    name: str
    schema_version: int
    schema: type[Schema]
    summary: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.name)

    @property
    def loader(self) -> Schema:
        """One instance per event type: building a schema copies its fields, a tenth of the
        cost of checking a return's event when done per message (profiled)."""
        return _schema_instance(self.schema)


@lru_cache(maxsize=None)
def _schema_instance(schema: type[Schema]) -> Schema:
    return schema()


def _catalogue(*types: EventType) -> dict[tuple[str, str], EventType]:
    return {t.key: t for t in types}


CATALOGUE = _catalogue(
    EventType("registry", "metadata_changed", 1, ev.MetadataChangedSchema,
              "Org units, data elements, data sets, rules or focal points changed; "
              "carries the new state of each changed object."),
    EventType("registry", "user_changed", 1, ev.UserChangedSchema,
              "A user was created or its token rotated."),
    EventType("submission", "return_received", 1, ev.ReturnReceivedSchema,
              "A return passed the synchronous checks and is durably stored."),
    EventType("validation", "return_validated", 1, ev.ReturnValidatedSchema,
              "A return has no HIGH violation; MEDIUM/LOW ones are attached as warnings."),
    EventType("validation", "return_rejected", 1, ev.ReturnRejectedSchema,
              "A return has a HIGH violation; nothing of it is aggregated."),
    EventType("aggregation", "return_aggregated", 1, ev.ReturnAggregatedSchema,
              "A return's values are visible in every aggregate."),
    EventType("aggregation", "history_loaded", 1, ev.HistoryLoadedSchema,
              "A chunk of past values is in the aggregates; each place given a value counts as reported."),
)


def event_type(source: str, name: str) -> EventType:
    try:
        return CATALOGUE[(source, name)]
    except KeyError:
        raise LookupError(f"event {source}.{name} is not in shared.events.CATALOGUE") from None


class EnvelopeSchema(EventSchema):
    event_id = fields.Str(required=True)
    event_type = fields.Str(required=True)
    source = fields.Str(required=True)
    schema_version = fields.Int(required=True)
    occurred_at = fields.AwareDateTime(required=True)
    correlation_id = fields.Str(allow_none=True, load_default=None)
    data = fields.Dict(required=True)


_envelope = EnvelopeSchema()


@dataclass(frozen=True)
class Event:
    """An event as a handler receives it: envelope fields plus the loaded payload."""
    event_id: str
    event_type: str
    source: str
    schema_version: int
    occurred_at: dt.datetime
    correlation_id: str | None
    data: dict

    @classmethod
    def from_message(cls, body: dict, expected: EventType) -> "Event":
        if not isinstance(body, dict):
            raise ValidationError(f"message body is {type(body).__name__}, not an event envelope")
        env = _envelope.load(body)
        if (env["source"], env["event_type"]) != expected.key:
            raise ValidationError(f"expected {expected.source}.{expected.name}, "
                                  f"got {env['source']}.{env['event_type']}")
        if env["schema_version"] > expected.schema_version:
            raise ValidationError(f"schema_version {env['schema_version']} is newer than "
                                  f"{expected.schema_version}, which this consumer understands")
        data = expected.loader.load(env["data"])
        return cls(env["event_id"], env["event_type"], env["source"], env["schema_version"],
                   env["occurred_at"], env["correlation_id"], data)


def envelope(source: str, name: str, data: dict, correlation_id: str | None = None,
             occurred_at: dt.datetime | None = None) -> dict:
    """The message for a new event, checked against the catalogue.

    The payload is dumped and re-loaded through its schema here, in the
    producer's transaction: a payload that doesn't fit fails the change that
    caused it instead of failing every consumer later.
    """
    kind = event_type(source, name)
    schema = kind.loader
    dumped = schema.dump(data)
    errors = schema.validate(dumped)
    if errors:
        raise ValidationError({f"{source}.{name}": errors})
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": name,
        "source": source,
        "schema_version": kind.schema_version,
        "occurred_at": (occurred_at or dt.datetime.now(dt.timezone.utc)).isoformat(),
        "correlation_id": correlation_id,
        "data": dumped,
    }


class Transient(Exception):
    """Raise from a handler for a failure that will likely pass (retried, never dead-lettered early)."""


TRANSIENT_ERRORS = (
    Transient,
    sqlalchemy.exc.OperationalError,      # connection lost, deadlock, serialization failure
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,          # connection pool exhausted
    AmqpConnectionError,
    KombuOperationalError,
    UnknownService,                       # an RPC peer is not running
    ConnectionError,
    socket.timeout,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT_ERRORS)


class Subscription(EventHandler):
    """``@subscribe(source, event_type[, batch=N])``: see the module docstring."""

    bouncer = topology.Bouncer()
    queue_consumer = topology.EventConsumer()

    def __init__(self, source_service: str, event_type_name: str, batch: int | None = None,
                 broadcast: bool = False, **kwargs):
        self.kind = event_type(source_service, event_type_name)
        self.batch = batch
        self.broadcast = broadcast
        super().__init__(source_service, event_type_name, handler_type=SERVICE_POOL,
                         reliable_delivery=True, requeue_on_error=False, **kwargs)

    @property
    def prefetch_count(self) -> int | None:
        """Unacknowledged messages the broker lets this consumer hold: enough for every
        batch in flight plus a full one gathering (None: the container's default)."""
        return self.batch * (BATCHES_IN_FLIGHT + 1) if self.batch else None

    def setup(self):
        self.settings = Settings.of(self.container)
        queue = topology.broadcast_queue if self.broadcast else topology.event_queue
        self.queue = queue(self.source_service, self.event_type, self.container.service_name,
                           self.method_name, self.settings)
        self.histogram = metrics.event_handler_seconds.labels(
            service=self.container.service_name, event=self.event_type)
        self.batch_sizes = metrics.event_batch_size.labels(
            service=self.container.service_name, event=self.event_type)
        self.gathering: list[tuple[Event, object]] = []   # (event, message) waiting for a batch
        self.alone: list[tuple[Event, object]] = []       # of a failed batch: to run one by one
        self.in_flight = 0
        # what nameko's EventHandler.setup would do after choosing the queue
        self.queue_consumer.register_provider(self)

    def handle_message(self, body, message):
        try:
            event = Event.from_message(body, self.kind)
        except ValidationError as exc:
            self.dead_letter(message, f"payload does not fit {self.kind.source}.{self.kind.name} "
                                      f"v{self.kind.schema_version}: {exc.messages}")
            return
        if self.batch:
            self.gathering.append((event, message))
            self.start_batches()
        else:
            self.run([(event, message)])

    def start_batches(self) -> None:
        # no green thread switch in here: the checks and the changes are atomic
        while self.alone and self.in_flight < BATCHES_IN_FLIGHT:
            self.run([self.alone.pop(0)])
        while self.gathering and self.may_start_batch():
            items, self.gathering = self.gathering[:self.batch], self.gathering[self.batch:]
            self.run(items)

    def may_start_batch(self) -> bool:
        """Whether the events gathering go now: at once when no batch runs (a quiet system
        answers as fast as before); beside a running batch only once half a batch has
        gathered. Under moderate load the next batch waits for the running one and carries
        what came meanwhile: at 50 returns/s, a second batch started at once for the one or
        two events that had arrived, and batches of four cost the machine so much more a
        return than batches of twelve that it was busy enough to queue (p99 latency halved,
        CPU a return down 5-7%; tests/bench/RESULTS.md). Flat out, half a batch gathers at
        once and two run side by side as before."""
        if self.in_flight == 0:
            return True
        return self.in_flight < BATCHES_IN_FLIGHT and len(self.gathering) >= self.batch // 2

    def run(self, items: list) -> None:
        """One worker for ``items``: a batched handler gets the list of events, any other the
        one event itself."""
        context_data = self.unpack_message_headers(items[0][1])
        if len(items) == 1 and items[0][0].correlation_id:
            context_data["correlation_id"] = items[0][0].correlation_id
        args = ([event for event, _ in items],) if self.batch else (items[0][0],)
        handle_result = partial(self.handle_result, items, time.perf_counter())
        self.in_flight += 1
        try:
            self.container.spawn_worker(self, args, {}, context_data=context_data,
                                        handle_result=handle_result)
        except ContainerBeingKilled:
            self.in_flight -= 1
            for _, message in items:
                self.queue_consumer.requeue_message(message)

    def handle_result(self, items, started, worker_ctx, result=None, exc_info=None):
        self.in_flight -= 1
        # each event's share of the worker: the sum stays the time spent, the count the events
        share = (time.perf_counter() - started) / len(items)
        for _ in items:
            self.histogram.observe(share)
        if self.batch:
            self.batch_sizes.observe(len(items))
        if exc_info is None:
            for _, message in items:
                self.queue_consumer.ack_message(message)
        elif len(items) > 1:
            log.warning("a batch of %d %s events failed (%s: %s); running each alone", len(items),
                        self.event_type, exc_info[0].__name__, exc_info[1])
            self.alone.extend(items)
        else:
            self.handle_failure(items[0][1], exc_info[1])
        if self.batch:
            self.start_batches()
        return result, exc_info

    def handle_failure(self, message, exc: BaseException) -> None:
        attempts = int((message.headers or {}).get(ATTEMPTS_HEADER, 0)) + 1
        transient = is_transient(exc)
        limit = TRANSIENT_ATTEMPTS if transient else HANDLER_ATTEMPTS
        metrics.event_handler_failures.labels(service=self.container.service_name,
                                              event=self.event_type,
                                              transient=str(transient).lower()).inc()
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        try:
            if attempts < limit:
                self.bouncer.retry_later(message, self.queue.name, attempts, reason)
            else:
                self.bouncer.dead_letter(message, self.container.service_name,
                                         self.queue.name, attempts, reason)
        except Exception:
            # could not park the message: give it back to the broker rather than lose it
            log.exception("could not retry or dead-letter a message of %s; requeueing", self.queue.name)
            self.queue_consumer.requeue_message(message)
            return
        self.queue_consumer.ack_message(message)

    def dead_letter(self, message, reason: str) -> None:
        log.error("dead-lettering a message of %s: %s", self.queue.name, reason)
        try:
            self.bouncer.dead_letter(message, self.container.service_name, self.queue.name,
                                     int((message.headers or {}).get(ATTEMPTS_HEADER, 0)), reason)
        except Exception:
            log.exception("could not dead-letter a message of %s; requeueing", self.queue.name)
            self.queue_consumer.requeue_message(message)
            return
        self.queue_consumer.ack_message(message)


subscribe = Subscription.decorator
