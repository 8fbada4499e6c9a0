"""PostgreSQL access: one engine per process, one schema per service.

Each service owns one PostgreSQL schema named after it and reads no other
(``tests/unit/test_layout.py`` checks that no service's SQL names another's
schema). All services of one process share one connection pool, so running
the five of them together costs one pool, not five.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


_LOCK_IN_ORDER = sa.text("""
SELECT count(pg_advisory_xact_lock(CAST(:space AS int), h))
FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1) ordered
""")


def lock_in_order(conn: sa.Connection, space: int, keys) -> None:
    """Transaction locks on ``keys`` (text) in lock space ``space``, taken in one global
    order (the ordered subquery), so transactions locking overlapping sets cannot deadlock."""
    keys = sorted(set(keys))
    if keys:
        conn.execute(_LOCK_IN_ORDER, {"space": space, "keys": keys})


def sqlalchemy_url(url: str) -> str:
    """DATABASE_URL as SQLAlchemy wants it: psycopg2 (made cooperative by psycogreen)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


# No JIT compilation: statnet's statements are short, and on a large table the planner's
# cost estimate crosses jit_above_cost, so PostgreSQL spent ~290 ms compiling a statement
# that runs in 40 (yearly totals at national scale, EXPLAIN ANALYZE; tests/bench/RESULTS.md).
# The standard advice for OLTP. The session's time zone is set, not taken from the server's
# configuration (a server set to Asia/Vientiane): the few times SQL writes as text (an
# alert's requeued_at, shown by webhooks) read the same everywhere; every day is taken AT
# TIME ZONE 'Asia/Vientiane' explicitly. (psycopg2 sets the ISO date style itself; libpq's
# PGTZ, if an operator sets it, still wins over the time zone here.)
_CONNECT_ARGS = {"options": "-c jit=off -c TimeZone=UTC"}


def engine_for(url: str, pool_size: int | None = None, max_overflow: int | None = None) -> Engine:
    """The process-wide engine for ``url``.

    Every service of a process shares it, so the pool is sized for their workers
    together: connections beyond ``pool_size`` are opened and closed per use, and
    under load that churn (a PostgreSQL backend forked per checkout) cost 10-15% of
    throughput in the benchmark. Two processes at most (30 + 10) each stay under
    PostgreSQL's default 100 connections. Services run one per process (docker-compose,
    several instances each) need fewer: ``STATNET_DB_POOL`` (default 30; a third more at
    peaks) keeps their sum under the server's ``max_connections``."""
    url = sqlalchemy_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if pool_size is None:  # the one setting read here: engines are made before settings
                from shared.config import Settings, _int

                raw = os.environ.get(Settings.ENV["db_pool"])
                pool_size = _int(Settings.ENV["db_pool"], raw, minimum=1) if raw else Settings.db_pool
            if max_overflow is None:
                max_overflow = max(1, pool_size // 3)
            engine = sa.create_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=1800,
                connect_args=_CONNECT_ARGS,
                future=True,
            )
            _ping_when_idle(engine)
            _engines[url] = engine
        return engine


def engine_outside_pool(engine: Engine) -> Engine:
    """An engine on ``engine``'s database whose every connection is its own, opened and
    closed per use: for a rare task done while callers hold the pool's connections and wait
    for it. A replica's reload asked the pool for a second connection while every other one
    was held by a worker waiting for that reload: after a restart under load the process
    answered nothing but 503s for minutes, each waiter's pool timeout renewing the wait (a
    chaos probe's HIGH; ``shared.replica``)."""
    key = "outside:" + engine.url.render_as_string(hide_password=False)
    with _lock:
        outside = _engines.get(key)
        if outside is None:
            outside = sa.create_engine(engine.url, poolclass=sa.pool.NullPool, connect_args=_CONNECT_ARGS,
                                       future=True)
            _engines[key] = outside
        return outside


# A connection back in the pool for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Find a dropped connection at checkout, not by the caller's first statement, when
    the connection has sat in the pool: after a database restart, an HTTP caller would
    otherwise meet a 503 per stale connection. SQLAlchemy's ``pool_pre_ping`` pings at
    every checkout: a round trip per transaction (0.05 ms of client and 0.05 ms of server
    CPU, measured over 20,000, and the wait), where under load connections go back and out
    within milliseconds. One that was used that recently and has died since fails its
    statement instead, which a dropped connection mid-transaction does anyway: the event is
    retried, the HTTP caller gets a 503, and the failure invalidates the whole pool so no
    other caller meets it."""
    dialect = engine.dialect

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy):
        idle_since = record.info.get("idle_since")  # None: a new connection, no need
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                # the pool replaces this connection and every one older than now
                raise sa.exc.InvalidatePoolError(str(exc)) from exc
            raise


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def ensure_database(url: str) -> bool:
    """Create the database named by ``url`` if it is missing (CONTRACT 1).

    Returns True when it was created. Safe against a concurrent creator.
    """
    target = make_url(sqlalchemy_url(url))
    name = target.database
    admin = engine_for_maintenance(target)
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": name}).scalar()
            if exists:
                return False
            try:
                conn.execute(sa.text(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0'))
            except (sa.exc.ProgrammingError, sa.exc.IntegrityError) as exc:
                # created meanwhile by another process: "already exists" once its CREATE has
                # committed, a unique violation on pg_database while both are under way
                if "already exists" not in str(exc) and "pg_database_datname_index" not in str(exc):
                    raise
                return False
            log.info("created database %s", name)
            return True
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    target = make_url(sqlalchemy_url(url))
    admin = engine_for_maintenance(target)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": target.database})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{target.database}"'))
    finally:
        admin.dispose()


def engine_for_maintenance(target) -> Engine:
    return sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT",
                            poolclass=sa.pool.NullPool)


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
