"""Logging: one JSON object per line, with the return's id as correlation id.

Every worker that handles an event carries the event's ``correlation_id`` (the
return's id for everything about a return); ``CorrelationFilter`` puts it on
every log record made in that worker, so one grep follows a return through
submission, validation, aggregation, registry and notify.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys

import eventlet.corolocal

_local = eventlet.corolocal.local()


def set_correlation(correlation_id: str | None, service: str | None = None) -> None:
    _local.correlation_id = correlation_id
    _local.service = service


def service() -> str | None:
    return getattr(_local, "service", None)


def correlation() -> str | None:
    return getattr(_local, "correlation_id", None)


class CorrelationFilter(logging.Filter):
    def filter(self, record):
        record.correlation_id = correlation()
        record.service = service()
        return True


class ClientErrorFilter(logging.Filter):
    """A request refused for the client's own mistake (a 4xx: no token, out of scope, a bad
    body) is not statnet's error: nameko logs every exception a worker raises at ERROR with
    its traceback, and each 401 filled the log with one. Such a record is told at INFO, in
    one line."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        status = getattr(exc, "status", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "request refused (%d): %s", (status, exc)
            record.exc_info = record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record):
        out = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "service", None):
            out["service"] = record.service
        if getattr(record, "correlation_id", None):
            out["correlation_id"] = record.correlation_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A line for a person, its time in UTC as the JSON lines' and saying so: logging's
    default is the machine's zone with no offset, which an operator set beside an API time
    (+07:00) could not tell apart."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s")

    def formatTime(self, record, datefmt=None):
        return dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")


def configure(fmt: str = "json", level: int = logging.INFO) -> None:
    # every record would ask for its thread and process: under eventlet's monkey patching
    # current_thread() alone was a third of the cost of a log line (py-spy); no line shows them
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationFilter())
    handler.addFilter(ClientErrorFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("amqp", "kombu", "nameko", "alembic", "eventlet.wsgi", "nameko.web.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
