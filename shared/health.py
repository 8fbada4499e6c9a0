"""Is this process fit to work: its database and broker answer. One answer for the
gateway's ``GET /health`` and for a lone service's own port (``STATNET_METRICS_PORT``),
which also serves its ``/metrics``.

That port was prometheus_client's own server, which answers every path with the metrics:
an orchestrator's readiness probe at ``/health`` got 200 with the database down."""
from __future__ import annotations

import errno
import json
import logging
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sqlalchemy as sa
from kombu import Connection
from prometheus_client import REGISTRY, make_wsgi_app

from shared.config import ConfigError, Settings
from shared.db import engine_for

log = logging.getLogger(__name__)


def checks(settings: Settings) -> dict[str, str]:
    """``{"database": "ok" | "unreachable: <error>", "broker": ...}``"""
    out = {}
    try:
        with engine_for(settings.database_url).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        out["database"] = "ok"
    except Exception as exc:
        out["database"] = f"unreachable: {type(exc).__name__}"
    try:
        with Connection(settings.amqp_uri, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        out["broker"] = "ok"
    except Exception as exc:
        out["broker"] = f"unreachable: {type(exc).__name__}"
    return out


def report(settings: Settings) -> tuple[int, dict]:
    """(HTTP status, body) of a health check: 503 unless everything answers."""
    found = checks(settings)
    healthy = all(v == "ok" for v in found.values())
    return (200 if healthy else 503), {"status": "ok" if healthy else "error", "checks": found}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # a scrape every 15 s is no news
        pass


def _app(settings: Settings):
    metrics = make_wsgi_app(REGISTRY)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/health":
            status, body = report(settings)
            start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                           [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: this port serves /metrics and /health\n"]

    return app


_served: set[int] = set()
_lock = threading.Lock()


def serve(settings: Settings) -> None:
    """``/metrics`` and ``/health`` on ``STATNET_METRICS_PORT``, once per process."""
    port = settings.metrics_port
    with _lock:
        if port in _served:
            return
        try:
            server = make_server("", port, _app(settings), _Server, handler_class=_Quiet)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:  # (a traceback from bind() at start)
                raise ConfigError(f"STATNET_METRICS_PORT={port} is already in use (another statnet process?): "
                                  "give each process its own") from None
            raise
        threading.Thread(target=server.serve_forever, name=f"metrics:{port}", daemon=True).start()
        _served.add(port)
    log.info("metrics and health on :%d (/metrics, /health)", port)
