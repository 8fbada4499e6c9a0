"""The process-wide engine on a real PostgreSQL: dropped connections found at checkout."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from shared import db


@pytest.fixture
def engine(settings):
    # its own engine (not the process-wide one other tests share), with the same setup
    engine = sa.create_engine(db.sqlalchemy_url(settings.database_url), pool_size=2, max_overflow=0)
    db._ping_when_idle(engine)
    yield engine
    engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()


def _terminate(settings, pid: int) -> None:
    admin = sa.create_engine(db.sqlalchemy_url(settings.database_url), poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    admin.dispose()
    time.sleep(0.2)  # the backend is gone before the next checkout


def test_a_connection_dropped_while_idle_in_the_pool_is_replaced_at_checkout(settings, engine, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.1)
    first = _backend_pid(engine)
    _terminate(settings, first)
    # the caller never sees the dead connection: the ping at checkout found it
    assert _backend_pid(engine) != first


def test_a_connection_used_moments_ago_is_not_pinged(settings, engine, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 60)
    first = _backend_pid(engine)
    _terminate(settings, first)
    # no ping: the statement meets the dead connection, as it would mid-transaction ...
    with pytest.raises(sa.exc.OperationalError) as failed:
        _backend_pid(engine)
    assert failed.value.connection_invalidated
    # ... and the pool replaced it: the next caller is served
    assert _backend_pid(engine) != first


def test_processes_starting_together_create_the_database_once_and_none_fails(settings):
    """Eight services started at once against a missing database: one CREATE DATABASE
    wins; the others met a unique violation on pg_database, which killed one of them."""
    import threading

    from sqlalchemy.engine import make_url

    url = make_url(db.sqlalchemy_url(settings.database_url))
    target = url.set(database=f"{url.database}_race").render_as_string(hide_password=False)
    db.drop_database(target)
    results, errors = [], []
    start = threading.Barrier(8)

    def create():
        start.wait()
        try:
            results.append(db.ensure_database(target))
        except Exception as exc:  # noqa: BLE001 - what the test is about
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        assert not errors, errors
        assert sorted(results) == [False] * 7 + [True]
    finally:
        db.drop_database(target)
