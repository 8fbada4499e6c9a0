"""RabbitMQ topology: names, arguments and declaration of every exchange and queue.

An event published before any queue is bound to its routing key is dropped by
the broker. statnet therefore declares the *whole* topology (every service's
event queues, delay queues and dead-letter queues) whenever any service
starts, from the service classes themselves, so a producer that starts first
never publishes into the void. ``deploy/rabbitmq/definitions.json`` holds the
same topology for operators who pre-provision brokers; a test keeps the two
equal.

Layout (per event queue ``evt-<source>-<event>--<service>.<handler>``, the
queue names nameko itself uses):

* ``<source>.events``: topic exchange per publishing service, routing key = event type.
* ``statnet.delay.<N>ms``: fanout exchange + queue with a TTL of N ms that
  dead-letters to the default exchange. A message parked there with routing key
  = its origin queue's name comes back to that queue after N ms: retry with
  backoff without a hot loop and without a broker plugin.
* ``statnet.dlq`` direct exchange, ``statnet.dlq.<service>`` queue per service:
  messages that keep failing. ``statnet dlq list|replay`` reads them.

Queue type is configurable (``STATNET_QUEUE_TYPE``): ``classic`` for one
broker node; ``quorum`` for a cluster, where ``x-delivery-limit`` also catches a
message that crashes its consumer process over and over (which no handler code
can see) and dead-letters it.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import uuid
from typing import IO, Iterable

from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue
from nameko.amqp.publish import Publisher
from nameko.events import EventHandler
from nameko.extensions import SharedExtension
from nameko.messaging import QueueConsumer

from shared import metrics
from shared.config import ConfigError, Settings
from shared.periods import show

log = logging.getLogger(__name__)

# retry delays by attempt number (1-based); the last one repeats
RETRY_DELAYS_MS = (1_000, 5_000, 30_000, 120_000)
DLQ_EXCHANGE = "statnet.dlq"

ATTEMPTS_HEADER = "x-statnet-attempts"
ORIGIN_QUEUE_HEADER = "x-statnet-origin-queue"
ERROR_HEADER = "x-statnet-error"
DEAD_LETTERED_AT_HEADER = "x-statnet-dead-lettered-at"
# a dead letter's own name, given when it is parked: what `statnet dlq drop --id` takes (a
# body that is no event has no event id, and an event may be parked by several services)
DEAD_LETTER_ID_HEADER = "x-statnet-dead-letter-id"


def events_exchange(source: str) -> Exchange:
    # the same exchange nameko's EventDispatcher would declare
    return Exchange(f"{source}.events", type="topic", durable=True, delivery_mode=2)


def _queue_arguments(settings: Settings, service: str) -> dict:
    args = {
        # broker-side dead-lettering (quorum delivery limit, rejected messages)
        "x-dead-letter-exchange": DLQ_EXCHANGE,
        "x-dead-letter-routing-key": service,
    }
    if settings.queue_type == "quorum":
        args["x-queue-type"] = "quorum"
        args["x-delivery-limit"] = settings.delivery_limit
    return args


def event_queue_name(source: str, event: str, service: str, handler: str) -> str:
    return f"evt-{source}-{event}--{service}.{handler}"


def event_queue(source: str, event: str, service: str, handler: str, settings: Settings) -> Queue:
    return Queue(event_queue_name(source, event, service, handler),
                 exchange=events_exchange(source), routing_key=event, durable=True,
                 queue_arguments=_queue_arguments(settings, service))


def broadcast_queue(source: str, event: str, service: str, handler: str, settings: Settings) -> Queue:
    """One instance's own queue of the event (``subscribe(broadcast=True)``): named for the
    instance, deleted when it goes (its connection closes); not declared with the topology."""
    return Queue(f"{event_queue_name(source, event, service, handler)}-{uuid.uuid4().hex}",
                 exchange=events_exchange(source), routing_key=event, durable=False,
                 auto_delete=True, exclusive=True)


def delay_exchange(delay_ms: int) -> Exchange:
    return Exchange(f"statnet.delay.{delay_ms}ms", type="fanout", durable=True, delivery_mode=2)


def delay_queue(delay_ms: int) -> Queue:
    return Queue(f"statnet.delay.{delay_ms}ms", exchange=delay_exchange(delay_ms), durable=True,
                 queue_arguments={"x-message-ttl": delay_ms,
                                  # back to the default exchange, keyed by the origin queue's name
                                  "x-dead-letter-exchange": ""})


def dlq_exchange() -> Exchange:
    return Exchange(DLQ_EXCHANGE, type="direct", durable=True, delivery_mode=2)


def dlq_name(service: str) -> str:
    return f"statnet.dlq.{service}"


def dlq(service: str, settings: Settings) -> Queue:
    args = {"x-queue-type": "quorum"} if settings.queue_type == "quorum" else {}
    return Queue(dlq_name(service), exchange=dlq_exchange(), routing_key=service, durable=True,
                 queue_arguments=args)


def subscriptions(service_cls, broadcast: bool | None = None) -> Iterable[tuple[str, str, str]]:
    """(source, event type, handler method) of every event entrypoint of a service class;
    with ``broadcast``, only those that are (True) or are not (False) broadcast."""
    for attr in sorted(dir(service_cls)):  # dir, not vars: handlers may come from a mixin
        method = getattr(service_cls, attr)
        for entrypoint in getattr(method, "nameko_entrypoints", ()):
            if isinstance(entrypoint, EventHandler) and (
                    broadcast is None or getattr(entrypoint, "broadcast", False) == broadcast):
                yield entrypoint.source_service, entrypoint.event_type, attr


def entities(service_classes, settings: Settings) -> list:
    """Every exchange and queue of the system, in declaration order."""
    from shared.events import CATALOGUE

    out: list = [events_exchange(source) for source in sorted({s for s, _ in CATALOGUE})]
    out += [delay_exchange(ms) for ms in RETRY_DELAYS_MS]
    out += [delay_queue(ms) for ms in RETRY_DELAYS_MS]
    out.append(dlq_exchange())
    for cls in service_classes:
        out.append(dlq(cls.name, settings))
        for source, event, handler in subscriptions(cls, broadcast=False):
            out.append(event_queue(source, event, cls.name, handler, settings))
    return out


def declare_all(settings: Settings, service_classes) -> None:
    """Declare the whole topology (idempotent; run by every service at start)."""
    with Connection(settings.amqp_uri, connect_timeout=10) as conn:
        channel = conn.channel()
        try:
            for entity in entities(service_classes, settings):
                try:
                    entity(channel).declare()
                except PreconditionFailed as exc:
                    raise ConfigError(_inequivalent(entity, settings, exc)) from None
        finally:
            channel.close()


def _inequivalent(entity, settings: Settings, exc: PreconditionFailed) -> str:
    """What to do when the broker holds a queue declared otherwise: STATNET_QUEUE_TYPE (or
    the delivery limit) changed on a vhost statnet already ran on. The broker's 406 alone
    came out of ``statnet run`` as a traceback."""
    asked = f"STATNET_QUEUE_TYPE={settings.queue_type}" + (
        f", STATNET_DELIVERY_LIMIT={settings.delivery_limit}" if settings.queue_type == "quorum" else "")
    return (f"{type(entity).__name__.lower()} {entity.name!r} exists on the broker with other arguments than "
            f"{asked} asks for ({exc.reply_text}). RabbitMQ cannot change a queue's type or delivery limit "
            f"in place: run with the settings the vhost was set up with, or move it over: stop statnet, "
            f"let `statnet status` show nothing queued and no dead letters, delete the statnet queues "
            f"(rabbitmqctl delete_queue, or use a new vhost), start again")


def definitions(service_classes, settings: Settings) -> dict:
    """The topology as a RabbitMQ definitions document (``rabbitmqctl import_definitions``),
    in the vhost ``AMQP_URI`` names."""
    vhost = Connection(settings.amqp_uri).virtual_host or "/"
    exchanges, queues, bindings = [], [], []
    for entity in entities(service_classes, settings):
        if isinstance(entity, Exchange):
            exchanges.append({"name": entity.name, "vhost": vhost, "type": entity.type,
                              "durable": True, "auto_delete": False, "internal": False,
                              "arguments": {}})
        else:
            queues.append({"name": entity.name, "vhost": vhost, "durable": True, "auto_delete": False,
                           "arguments": dict(entity.queue_arguments or {})})
            if entity.exchange is not None and entity.exchange.name:
                bindings.append({"source": entity.exchange.name, "vhost": vhost,
                                 "destination": entity.name, "destination_type": "queue",
                                 "routing_key": entity.routing_key or "", "arguments": {}})
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}


def _delay_for(attempt: int) -> int:
    return RETRY_DELAYS_MS[min(attempt, len(RETRY_DELAYS_MS)) - 1]


class EventConsumer(QueueConsumer):
    """nameko's QueueConsumer for event subscriptions, with room for batches.

    nameko lets each consumer hold as many unacknowledged messages as the
    container has workers. A batched subscription needs more (a batch is one
    worker, and its messages are acknowledged when it commits). The prefetch is
    one value for the channel (RabbitMQ applies a channel's last ``basic.qos``
    to every consumer started after it), so it is the largest any subscription
    asks for. RPC keeps nameko's own consumer, and its own connection.
    """

    @property
    def prefetch_count(self) -> int:
        wanted = [p.prefetch_count for p in self._providers if getattr(p, "prefetch_count", None)]
        return max([self.container.max_workers, *wanted])

    def on_decode_error(self, message, exc):
        """A body that cannot be decoded (bytes that are not UTF-8, a content type no one
        reads) goes to the service's dead-letter queue like any message that cannot be
        handled. kombu's default logs it and acks it: the message was simply gone."""
        tag = (message.delivery_info or {}).get("consumer_tag")
        for provider, consumer in list(self._consumers.items()):
            if tag in consumer._active_tags.values() and hasattr(provider, "dead_letter"):
                provider.dead_letter(message, f"the body cannot be decoded (content type "
                                              f"{message.content_type!r}): {exc}")
                return
        super().on_decode_error(message, exc)


class Bouncer(SharedExtension):
    """Parks failed messages: in a delay queue to retry, or in the service's DLQ.

    One per service container; publishes with confirms and ``mandatory`` so a
    parked message is known to be on the broker before the original is acked.
    """

    def setup(self):
        self.settings = Settings.of(self.container)
        self.publisher = Publisher(self.settings.amqp_uri, use_confirms=True, mandatory=True)
        metrics.dead_letters_total.labels(service=self.container.service_name)  # at 0 until one is

    def _republish(self, message, exchange: Exchange, routing_key: str, headers: dict, declare) -> None:
        merged = dict(message.headers or {})
        merged.update(headers)
        self.publisher.publish(
            message.body, exchange=exchange, routing_key=routing_key, headers=merged,
            content_type=message.content_type, content_encoding=message.content_encoding,
            declare=declare)

    def retry_later(self, message, origin_queue: str, attempts: int, reason: str) -> None:
        delay = _delay_for(attempts)
        log.warning("retrying a message of %s in %d ms (attempt %d): %s",
                    origin_queue, delay, attempts, reason)
        self._republish(message, delay_exchange(delay), origin_queue,
                        {ATTEMPTS_HEADER: attempts, ERROR_HEADER: reason},
                        declare=[delay_exchange(delay), delay_queue(delay)])

    def dead_letter(self, message, service: str, origin_queue: str, attempts: int, reason: str) -> None:
        log.error("dead-lettering a message of %s after %d attempt(s): %s",
                  origin_queue, attempts, reason)
        self._republish(message, dlq_exchange(), service,
                        {ATTEMPTS_HEADER: attempts, ERROR_HEADER: reason,
                         ORIGIN_QUEUE_HEADER: origin_queue,
                         DEAD_LETTERED_AT_HEADER: dt.datetime.now(dt.timezone.utc).isoformat(),
                         DEAD_LETTER_ID_HEADER: uuid.uuid4().hex},
                        declare=[dlq_exchange(), dlq(service, self.settings)])
        metrics.dead_letters_total.labels(service=service).inc()


# ----------------------------------------------------------------- DLQ tools

def _origin_of(message) -> str | None:
    headers = message.headers or {}
    origin = headers.get(ORIGIN_QUEUE_HEADER)
    if origin:
        return origin
    deaths = headers.get("x-death") or []  # dead-lettered by the broker itself
    return deaths[0].get("queue") if deaths else None


def _id_of(message, body) -> str | None:
    """What ``dlq drop --id`` knows a dead letter by: the name it was parked under, else (one
    parked before names were given, or by the broker) its event's id."""
    own = (message.headers or {}).get(DEAD_LETTER_ID_HEADER)
    if own:
        return own
    return body.get("event_id") if isinstance(body, dict) else None


def _shown(stamp: str | None) -> str | None:
    """The header's UTC instant as users see instants (Asia/Vientiane)."""
    try:
        return show(dt.datetime.fromisoformat(stamp)) if stamp else stamp
    except ValueError:
        return stamp


def _describe(message) -> dict:
    headers = message.headers or {}
    try:
        body = json.loads(message.body)
    except (ValueError, TypeError):
        body = None
    return {
        "id": _id_of(message, body),
        "origin_queue": _origin_of(message),
        "error": headers.get(ERROR_HEADER),
        "attempts": headers.get(ATTEMPTS_HEADER),
        "dead_lettered_at": _shown(headers.get(DEAD_LETTERED_AT_HEADER)),
        "event_id": body.get("event_id") if isinstance(body, dict) else None,
        "event_type": body.get("event_type") if isinstance(body, dict) else None,
        "correlation_id": body.get("correlation_id") if isinstance(body, dict) else None,
    }


def _open_dlq(channel, service: str, settings: Settings) -> tuple[Queue, int]:
    """A service's DLQ on ``channel`` (declared, as the service declares it), and how many
    messages it holds."""
    queue = dlq(service, settings)(channel)
    queue.declare()  # with its exchange and binding: dead letters reach one made here too
    _, waiting, _ = queue.queue_declare(passive=True)
    return queue, waiting


def _taken(queue, n: int):
    """Up to ``n`` messages off ``queue``, unacknowledged: each one not acked goes back to its
    place when the channel closes."""
    for _ in range(n):
        message = queue.get(no_ack=False)
        if message is None:
            return
        yield message


def dlq_list(settings: Settings, service: str, limit: int = 1000) -> tuple[list[dict], int]:
    """What sits in a service's DLQ, without consuming it: the first ``limit`` messages, and
    how many the queue holds."""
    out = []
    with Connection(settings.amqp_uri, connect_timeout=10) as conn:
        channel = conn.channel()
        queue, waiting = _open_dlq(channel, service, settings)
        for message in _taken(queue, limit):
            out.append(_describe(message))
        # closing the channel returns every unacked message to the queue, in order
        channel.close()
    return out, waiting


def dlq_replay(settings: Settings, service: str, limit: int | None = None) -> tuple[int, list[str]]:
    """Move dead letters back to the queues they came from, attempts reset; (how many
    moved, why each one left in place was). A message that names no origin queue, or one
    that no longer exists (a handler renamed by an upgrade), stays in the DLQ, in its
    place, and the ones behind it are still replayed (the first such message stopped the
    run, said "replayed 0", and stopped every later run there too).

    Only what is in the queue when the replay starts is moved: a message that
    is still poisonous comes straight back, and must not be replayed again in
    the same run.
    """
    from nameko.amqp.publish import UndeliverableMessage

    moved, left = 0, []
    publisher = Publisher(settings.amqp_uri, use_confirms=True, mandatory=True)
    with Connection(settings.amqp_uri, connect_timeout=10) as conn:
        channel = conn.channel()
        queue, waiting = _open_dlq(channel, service, settings)
        limit = waiting if limit is None else min(limit, waiting)
        for message in _taken(queue, limit):
            origin = _origin_of(message)
            if not origin:
                # unacked until the channel closes: back in its place then, not at the head now
                left.append(f"no origin queue: {_describe(message)}")
                continue
            headers = {k: v for k, v in (message.headers or {}).items()
                       if k not in (ATTEMPTS_HEADER, ERROR_HEADER, ORIGIN_QUEUE_HEADER,
                                    DEAD_LETTERED_AT_HEADER, DEAD_LETTER_ID_HEADER, "x-death", "x-first-death-exchange",
                                    "x-first-death-queue", "x-first-death-reason",
                                    "x-last-death-exchange", "x-last-death-queue",
                                    "x-last-death-reason")}
            try:
                publisher.publish(message.body, exchange="", routing_key=origin, headers=headers,
                                  content_type=message.content_type,
                                  content_encoding=message.content_encoding)
            except UndeliverableMessage:
                left.append(f"its origin queue {origin!r} does not exist: {_describe(message)}")
                continue
            message.ack()
            moved += 1
        channel.close()
    return moved, left


def dlq_drop(settings: Settings, service: str, ids: set[str] | None, archive: IO[str]) -> tuple[int, set[str]]:
    """Take dead letters out of a service's DLQ for good: every one (``ids`` None) or those
    whose id (as ``dlq list`` shows it) is in ``ids``; (how many dropped, the ids asked for
    and not found). Each goes to ``archive`` first, one JSON line with its headers and
    body, written through to disk before any is acknowledged: an operator gives up on a
    message, the system never loses one. The rest stay in place, in their order; only
    what the queue held when the run started is looked at.
    """
    dropped = []
    found: set[str] = set()
    with Connection(settings.amqp_uri, connect_timeout=10) as conn:
        channel = conn.channel()
        queue, waiting = _open_dlq(channel, service, settings)
        for message in _taken(queue, waiting):
            record = _archived(message)
            if ids is None or record["id"] in ids:
                archive.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                dropped.append(message)
                found.add(record["id"])
        if dropped:
            archive.flush()
            os.fsync(archive.fileno())
            for message in dropped:
                message.ack()
        channel.close()  # the ones not taken go back, in their places
    return len(dropped), (ids or set()) - found


def _archived(message) -> dict:
    """A dead letter as ``dlq drop`` keeps it: enough to read it, or to publish it again."""
    raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    record = {**_describe(message), "headers": dict(message.headers or {}),
              "content_type": message.content_type, "content_encoding": message.content_encoding}
    try:
        record["body"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(raw).decode("ascii")
    return record


def queue_depths(settings: Settings, names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(messages ready, consumers) per queue, by passive declaration (no management plugin)."""
    out = {}
    with Connection(settings.amqp_uri, connect_timeout=10) as conn:
        for name in names:
            channel = conn.channel()
            try:
                _, count, consumers = channel.queue_declare(queue=name, passive=True)
                out[name] = (count, consumers)
            except Exception:  # queue missing: the passive declare closed the channel
                out[name] = (0, 0)
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
    return out
