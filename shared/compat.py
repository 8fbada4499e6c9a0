"""Two fixes to nameko 2.14 for the client stack statnet runs on (kombu 5.7, py-amqp 5.4).

nameko kills a whole service container when an exception escapes a managed
thread or a worker's result handler. Two such exceptions happen on every
broker restart with today's py-amqp, which reports a reset socket as a plain
``OSError`` where nameko expected ``amqp.exceptions.ConnectionError``:

* ``QueueConsumer.ack_message``/``requeue_message`` acking on a connection that
  just died. The broker returns unacked messages to their queue by itself, so
  the right reaction is to log and go on (consumers are idempotent).
* ``RpcConsumer.handle_result`` publishing an RPC reply while the broker is
  away. The request stays unacked and is redelivered after the reconnection;
  the caller has timed out meanwhile and retries (statnet's RPC methods that
  change state are idempotent).

Found by ``tests/e2e/test_faults.py::test_broker_stopped_and_started_during_a_burst``.
"""
from __future__ import annotations

import logging

from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError as KombuOperationalError
from nameko.messaging import QueueConsumer
from nameko.rpc import RpcConsumer

log = logging.getLogger(__name__)

CONNECTION_LOST = (AmqpConnectionError, KombuOperationalError, OSError)
_applied = False


def _settle(message, how: str) -> None:
    if not message.channel.connection:
        return  # the broker has already taken the message back
    try:
        getattr(message, how)()
    except CONNECTION_LOST as exc:
        log.warning("could not %s a message (%s): the broker will redeliver it", how, exc)


def _ack_message(self, message):
    _settle(message, "ack")


def _requeue_message(self, message):
    _settle(message, "requeue")


def apply() -> None:
    global _applied
    if _applied:
        return
    original_handle_result = RpcConsumer.handle_result

    def handle_result(self, message, result, exc_info):
        try:
            return original_handle_result(self, message, result, exc_info)
        except CONNECTION_LOST as exc:
            log.warning("could not reply to an RPC call (%s): the request will be redelivered", exc)
            return result, exc_info

    QueueConsumer.ack_message = _ack_message
    QueueConsumer.requeue_message = _requeue_message
    RpcConsumer.handle_result = handle_result
    _applied = True
