"""One answer, for every service, to "what if it fails half-way".

* **Outbox.** A service never publishes an event directly. ``tx.emit(...)``
  writes the event into the service's ``outbox`` table in the same
  transaction as the change that caused it. If the transaction rolls back,
  the event never existed; if it commits, the event will be published even
  if the process dies the next instant.
* **Relay.** ``OutboxRelay`` (one per service container) publishes outbox rows
  in order, with publisher confirms and ``mandatory`` routing, and deletes
  them once the broker has confirmed them. It is woken right after a commit
  that emitted something, and polls every second for rows left by a crashed
  process. Two instances of a service relay disjoint rows (``SKIP LOCKED``).
  A crash between confirm and delete publishes a row twice: delivery is
  at-least-once, which is why consumers are idempotent.
* **Inbox.** ``db.consume(event)`` records the event id in the service's
  ``inbox`` table in the same transaction as the handler's effect. A
  redelivered event finds its id there and the handler does nothing twice.
  ``InboxPruner`` forgets ids older than ``STATNET_INBOX_DAYS`` (30), hourly: the
  table grew by a row per event and handler for ever (six a return). A consumed
  message comes back within minutes (a consumer that died before its ack) or not
  at all; a dead letter is one that was never consumed, so replaying it weeks
  later finds no id either way.

Usage inside a service::

    db = Database(tables.metadata)

    @subscribe("submission", "return_received")
    def validate_return(self, event):
        with self.db.consume(event) as tx:
            if tx.duplicate:
                return
            tx.execute(...)
            tx.emit("return_validated", {...})
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import time

import sqlalchemy as sa
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from sqlalchemy.dialects.postgresql import JSON

from shared import collectors, metrics, serialization, topology
from shared.background import Pump
from shared.confirms import ConfirmedBatches, Outgoing, Unroutable
from shared.config import Settings
from shared.db import engine_for
from shared.events import envelope
from shared.local import check_caller_waits
from shared.logs import set_correlation

log = logging.getLogger(__name__)

RELAY_BATCH = 200
RELAY_POLL_SECONDS = 1.0


def delivery_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The outbox and inbox of the service whose schema ``metadata`` describes."""
    outbox = sa.Table(
        "outbox", metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False, unique=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("message", JSON, nullable=False),  # the text sent (shared.migrations)
        sa.Column("correlation_id", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    inbox = sa.Table(
        "inbox", metadata,
        sa.Column("handler", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    return outbox, inbox


class Tx:
    """One database transaction, able to emit events atomically with its changes."""

    def __init__(self, conn: sa.Connection, service_name: str, outbox: sa.Table,
                 correlation_id: str | None = None):
        self.conn = conn
        self.service_name = service_name
        self.outbox = outbox
        self.correlation_id = correlation_id
        self.emitted = 0
        self.duplicate = False

    def execute(self, statement, params=None):
        return self.conn.execute(statement, params) if params is not None else self.conn.execute(statement)

    def emit(self, event_type: str, data: dict, correlation_id: str | None = None,
             along: tuple[str, dict] | None = None) -> str:
        """Queue an event for publication when (and only if) this transaction commits."""
        return self.emit_all([(event_type, data, correlation_id)], along)[0]

    def emit_all(self, events: list[tuple[str, dict, str | None]],
                 along: tuple[str, dict] | None = None, occurred_at: dt.datetime | None = None) -> list[str]:
        """``emit`` for several (event type, payload, correlation id): one INSERT for all.

        ``along``: (SQL of a data-modifying statement, its parameters) run in the same
        statement as the outbox insert, for a change whose event is known before it is
        made: one round trip for both (each costs ~0.2 ms of client CPU, measured).
        ``occurred_at``: when, if the change records its own time too (one time, not two).
        """
        if not events:
            return []
        messages = [envelope(self.service_name, kind, data, corr or self.correlation_id, occurred_at)
                    for kind, data, corr in events]
        sql, params = along or (None, {})
        # encoded once, here; the relay sends these very bytes (no decode/re-encode)
        self.conn.execute(_emit_statement(self.outbox.fullname, sql), {
            **params,
            "event_id": [m["event_id"] for m in messages], "event_type": [m["event_type"] for m in messages],
            "message": [serialization.dumps(m) for m in messages],
            "correlation_id": [m["correlation_id"] for m in messages]})
        self.emitted += len(messages)
        return [m["event_id"] for m in messages]


@functools.lru_cache(maxsize=None)
def _emit_statement(outbox: str, along: str | None = None) -> sa.TextClause:
    """The outbox insert of one service; rows keep the order emitted (the relay's order).
    ``along`` runs in the same statement (a data-modifying WITH runs whether read or not)."""
    return sa.text((f"WITH along AS ({along}) " if along else "") + f"""
        INSERT INTO {outbox} (event_id, event_type, message, correlation_id)
        SELECT e, t, CAST(m AS json), c
        FROM unnest(CAST(:event_id AS text[]), CAST(:event_type AS text[]), CAST(:message AS text[]),
                    CAST(:correlation_id AS text[])) WITH ORDINALITY AS x(e, t, m, c, n)
        ORDER BY n""")


@functools.lru_cache(maxsize=None)
def _inbox_statement(inbox: str) -> sa.TextClause:
    """Record a batch's event ids; returns those not recorded before."""
    return sa.text(f"INSERT INTO {inbox} (handler, event_id) SELECT :handler, unnest(CAST(:ids AS text[])) "
                   "ON CONFLICT DO NOTHING RETURNING event_id")


class Store:
    """What a worker sees of its service's database (``self.db``)."""

    def __init__(self, provider: "Database", worker_ctx):
        self.provider = provider
        self.worker_ctx = worker_ctx

    @property
    def engine(self) -> sa.Engine:
        return self.provider.engine

    @property
    def correlation_id(self) -> str | None:
        return self.worker_ctx.context_data.get("correlation_id") if self.worker_ctx else None

    @contextlib.contextmanager
    def transaction(self):
        """A read-write transaction; events emitted in it are published after commit."""
        provider = self.provider
        with self.engine.begin() as conn:
            tx = Tx(conn, provider.service_name, provider.outbox, self.correlation_id)
            yield tx
            if self.worker_ctx is not None and isinstance(self.worker_ctx.entrypoint, Rpc):
                # an RPC's caller that has given up was told 503: nothing is committed
                check_caller_waits(self.worker_ctx.context_data)
        if tx.emitted:
            self.provider.relay.wake()

    @contextlib.contextmanager
    def consume(self, event):
        """A transaction that handles ``event`` at most once (see module docstring).

        ``tx.duplicate`` is True when this handler already handled the event;
        the handler should then return without doing anything.
        """
        with self.consume_many([event]) as tx:
            tx.duplicate = not tx.fresh
            yield tx

    @contextlib.contextmanager
    def consume_many(self, events: list):
        """``consume`` for a batch of events (``@subscribe(..., batch=N)``).

        ``tx.fresh`` lists the events this handler has not handled before, each
        once, in the order given: redeliveries, and a message delivered twice in
        one batch, are left out.
        """
        handler = f"{self.provider.service_name}.{self.worker_ctx.entrypoint.method_name}"
        inbox = self.provider.inbox
        ids = list(dict.fromkeys(e.event_id for e in events))
        with self.transaction() as tx:
            new = set(tx.execute(_inbox_statement(inbox.fullname), {"handler": handler, "ids": ids}).scalars())
            tx.fresh = []
            for event in events:
                if event.event_id in new:
                    tx.fresh.append(event)
                    new.discard(event.event_id)
            if len(tx.fresh) < len(events):
                log.info("%d of %d events already handled by %s: ignored", len(events) - len(tx.fresh),
                         len(events), handler)
            yield tx

    @contextlib.contextmanager
    def connect(self):
        """A connection for reads; nothing done on it is committed."""
        with self.engine.connect() as conn:
            yield conn


class OutboxRelay(Pump):
    """Publishes a service's outbox to RabbitMQ (see module docstring)."""

    name = "outbox-relay"
    poll_seconds = RELAY_POLL_SECONDS
    batch = RELAY_BATCH

    def __init__(self):
        super().__init__()
        self.engine = None
        self.outbox = None

    def configure(self, engine: sa.Engine, outbox: sa.Table, service_name: str) -> None:
        self.engine, self.outbox, self.service_name = engine, outbox, service_name

    def ready(self) -> bool:
        return self.outbox is not None

    def setup(self):
        self.settings = Settings.of(self.container)
        self.publisher = ConfirmedBatches(self.settings.amqp_uri)
        self.published = metrics.outbox_published_total.labels(service=self.container.service_name)

    def stop(self):
        super().stop()
        self.publisher.close()

    def kill(self):
        super().kill()
        self.publisher.close()

    def work(self) -> int:
        self.publisher.heartbeat()  # every poll: an idle relay keeps its connection
        return self.relay_batch()

    def relay_batch(self) -> int:
        """Publish up to RELAY_BATCH outbox rows, with one wait for all their confirms;
        returns how many were published."""
        outbox = self.outbox
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(outbox.c.id, outbox.c.event_id, outbox.c.event_type, outbox.c.correlation_id,
                          sa.cast(outbox.c.message, sa.Text).label("body"))
                .order_by(outbox.c.id).limit(RELAY_BATCH)
                .with_for_update(skip_locked=True)).all()
            if not rows:
                return 0
            exchange = topology.events_exchange(self.service_name).name
            started = time.perf_counter()
            try:
                self.publisher.publish([Outgoing(
                    row.body.encode("utf-8"), exchange, row.event_type,
                    {"content_type": serialization.CONTENT_TYPE, "content_encoding": "utf-8",
                     "delivery_mode": 2, "correlation_id": row.correlation_id, "message_id": row.event_id})
                    for row in rows])
            except Unroutable as exc:
                # no queue bound: the topology was not declared (or was deleted).
                # Keep the events; they go out once the topology is back.
                raise RuntimeError(f"events of {self.service_name} are unroutable: {exc}") from None
            conn.execute(outbox.delete().where(outbox.c.id.in_([r.id for r in rows])))
        self.published.inc(len(rows))
        log.debug("relayed %d events of %s in %.1f ms", len(rows), self.service_name,
                  (time.perf_counter() - started) * 1000)
        return len(rows)


class InboxPruner(Pump):
    """Deletes a service's inbox rows older than ``STATNET_INBOX_DAYS``, every hour (see the
    module docstring). One statement, by ``processed_at`` without an index: an hourly scan
    of the table costs less than an index every consumed event would maintain."""

    name = "inbox-pruner"
    poll_seconds = 3600.0

    def __init__(self):
        super().__init__()
        self.engine = None
        self.inbox = None

    def configure(self, engine: sa.Engine, inbox: sa.Table, days: int) -> None:
        self.engine, self.inbox, self.days = engine, inbox, days

    def ready(self) -> bool:
        return self.inbox is not None

    def start(self):
        super().start()
        # the first prune at start, then hourly: waiting an hour first, a process restarted
        # more often than that (deploys, a crash loop) never pruned (a soak probe)
        self.wake()

    def work(self) -> int:
        pruned = prune_inbox(self.engine, self.inbox, self.days)
        if pruned:
            log.info("%s forgot %d consumed event id(s) older than %d days", self.container.service_name,
                     pruned, self.days)
        return 0  # (all of them at once: no next batch)


def prune_inbox(engine: sa.Engine, inbox: sa.Table, days: int) -> int:
    """Delete the inbox rows processed more than ``days`` ago; how many."""
    with engine.begin() as conn:
        return conn.execute(inbox.delete().where(
            inbox.c.processed_at < sa.func.now() - sa.func.make_interval(0, 0, 0, days))).rowcount


DATABASE_UP = ("statnet_database_up", "1 if the service's last scrape reached its database, else 0", ["service"])


class Database(DependencyProvider):
    """A service's own schema, with its outbox relay and inbox (``self.db``)."""

    relay = OutboxRelay()
    pruner = InboxPruner()

    def __init__(self, metadata: sa.MetaData):
        self.metadata = metadata
        self.schema = metadata.schema

    def setup(self):
        self.settings = Settings.of(self.container)
        self.service_name = self.container.service_name
        self.engine = engine_for(self.settings.database_url)
        self.outbox = self.metadata.tables[f"{self.schema}.outbox"]
        self.inbox = self.metadata.tables[f"{self.schema}.inbox"]
        self.relay.configure(self.engine, self.outbox, self.service_name)
        self.pruner.configure(self.engine, self.inbox, self.settings.inbox_days)

    def start(self):
        collectors.add_source(("outbox", self.service_name), self.outbox_families)

    def stop(self):
        collectors.remove_source(("outbox", self.service_name), self.outbox_families)

    kill = stop

    def outbox_families(self):
        """Events committed but not yet relayed, and how long the oldest has waited: a relay
        that is stuck (broker unreachable, a bug) shows here before anything else does. And
        whether the service reaches its database at all: with PostgreSQL down every gauge
        read from it vanished, /metrics still answered 200, and no alert fired (the outbox
        alert needs its series; handler and HTTP errors need traffic)."""
        try:
            with self.engine.connect() as conn:
                backlog, age = conn.execute(sa.select(
                    sa.func.count(), sa.func.coalesce(sa.func.extract("epoch", sa.func.now() - sa.func.min(
                        self.outbox.c.created_at)), 0)).select_from(self.outbox)).one()
        except sa.exc.DBAPIError as exc:  # refused, not accepting connections, cut off
            collectors.count_failure(("outbox", self.service_name), exc)
            yield collectors.gauge(*DATABASE_UP, [(self.service_name, 0)])
            return
        yield collectors.gauge(*DATABASE_UP, [(self.service_name, 1)])
        yield collectors.gauge("statnet_outbox_backlog", "Events in a service's outbox not yet published",
                               ["service"], [(self.service_name, backlog)])
        yield collectors.gauge("statnet_outbox_oldest_seconds", "Age of the oldest unpublished event",
                               ["service"], [(self.service_name, age)])

    def get_dependency(self, worker_ctx):
        return Store(self, worker_ctx)

    def worker_setup(self, worker_ctx):
        worker_ctx.statnet_started = time.perf_counter()
        # every log line of this worker carries the return's id (shared.logs)
        set_correlation(worker_ctx.context_data.get("correlation_id"), self.service_name)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        # every RPC of every service timed in one place (event handlers time themselves,
        # with their retries, in shared.events)
        if isinstance(worker_ctx.entrypoint, Rpc):
            method = worker_ctx.entrypoint.method_name
            metrics.rpc_seconds.labels(service=self.service_name, method=method).observe(
                time.perf_counter() - worker_ctx.statnet_started)
            if exc_info is not None:
                metrics.rpc_errors_total.labels(service=self.service_name, method=method).inc()

    def worker_teardown(self, worker_ctx):
        set_correlation(None)

    def store(self) -> Store:
        """Database access outside a worker (timers' helpers, background threads)."""
        return Store(self, None)
