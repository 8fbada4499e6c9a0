"""Publishing a batch of messages with one wait for the broker's confirms.

nameko's ``Publisher`` (kombu) waits for the broker to confirm each message
before sending the next: a round trip per event, most of an outbox relay's
time under load (tests/bench/RESULTS.md). RabbitMQ's advice for throughput
with safety is to publish a batch and then wait for all of its confirms
(https://www.rabbitmq.com/docs/confirms). ``ConfirmedBatches`` does that on a
py-amqp channel in confirm mode:

* every message is ``mandatory``: one that no queue is bound to comes back
  (``basic.return``, before its ack) and the batch fails;
* the batch succeeds only when the broker has acked every message of it; a
  nack, a timeout or a lost connection fails it. The caller (the outbox relay)
  then keeps its rows and publishes them again later: at-least-once, as before.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import amqp
from kombu import Connection

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_SECONDS = 30


class Unconfirmed(Exception):
    """The broker did not take responsibility for every message of a batch."""


class Unroutable(Unconfirmed):
    """A message of the batch reached no queue."""


@dataclass(frozen=True)
class Outgoing:
    body: bytes
    exchange: str
    routing_key: str
    properties: dict


class ConfirmedBatches:
    def __init__(self, amqp_uri: str, heartbeat: int = 60):
        self.amqp_uri = amqp_uri
        self.heartbeat_seconds = heartbeat
        self.kombu = None
        self.channel = None
        self.next_tag = 1        # the broker numbers a confirm channel's messages from 1

    def _open(self):
        if self.channel is not None:
            return self.channel
        self.kombu = Connection(self.amqp_uri, heartbeat=self.heartbeat_seconds)
        self.kombu.connect()
        channel = self.kombu.connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self.channel, self.next_tag = channel, 1
        return channel

    def close(self) -> None:
        channel, conn, self.channel, self.kombu = self.channel, self.kombu, None, None
        for closing in (channel, conn):
            if closing is not None:
                try:
                    closing.close()
                except Exception:  # already broken: nothing to release
                    pass

    def heartbeat(self) -> None:
        """Send a heartbeat if one is due (py-amqp sends none by itself); a connection the
        broker has dropped is closed here and opened again by the next batch. What the
        broker sent meanwhile (its heartbeats) is read first: py-amqp counts only frames
        read as the broker's heartbeats, and an idle publisher read none, so every quiet
        spell ended in "Too many heartbeats missed" and a new connection."""
        if self.kombu is None:
            return
        try:
            try:
                self.kombu.connection.drain_events(timeout=0)
            except socket.timeout:
                pass  # nothing waiting
            self.kombu.heartbeat_check()
        except Exception as exc:
            log.warning("confirm channel lost (%s): reconnecting on the next batch", exc)
            self.close()

    # ------------------------------------------------------------ confirms

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.pending = {t for t in self.pending if t > tag}
        else:
            self.pending.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self.nacked = True

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        self.returned.append(f"{exchange}/{routing_key}")

    def publish(self, messages: list[Outgoing]) -> None:
        """Send ``messages`` and return once the broker has confirmed all of them."""
        if not messages:
            return
        try:
            channel = self._open()
            first = self.next_tag
            self.pending = set(range(first, first + len(messages)))
            self.nacked, self.returned = False, []
            for m in messages:
                channel.basic_publish(amqp.Message(m.body, **m.properties), exchange=m.exchange,
                                      routing_key=m.routing_key, mandatory=True)
            self.next_tag += len(messages)
            while self.pending and not self.nacked:
                self.kombu.connection.drain_events(timeout=CONFIRM_TIMEOUT_SECONDS)
        except (OSError, socket.timeout, amqp.exceptions.AMQPError) as exc:
            self.close()
            raise Unconfirmed(f"{type(exc).__name__}: {exc}") from exc
        if self.returned:
            raise Unroutable(f"no queue is bound for {sorted(set(self.returned))}: is the topology declared?")
        if self.nacked:
            raise Unconfirmed("the broker refused (nacked) a message of the batch")
