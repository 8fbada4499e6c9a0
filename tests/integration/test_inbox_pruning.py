"""A service forgets the ids of events it consumed long ago (``STATNET_INBOX_DAYS``): its inbox
grew by a row per event and handler for ever, six a return."""
from __future__ import annotations

import sqlalchemy as sa

from shared.db import engine_for
from shared.delivery import InboxPruner
from tests.support.client import wait_until


def test_a_running_service_prunes_its_inbox_of_ids_older_than_its_setting(settings):
    from services.runner import build, start_edge_last, stop_edge_first

    runner = build(settings.replace(inbox_days=30), ["validation"])
    start_edge_last(runner)
    try:
        [pruner] = [e for c in runner.containers for e in c.extensions if isinstance(e, InboxPruner)]
        engine = engine_for(settings.database_url)
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO validation.inbox (handler, event_id, processed_at) VALUES "
                "('probe', 'old-1', now() - interval '40 days'), ('probe', 'old-2', now() - interval '30 days 1 hour'),"
                "('probe', 'kept-1', now() - interval '29 days'), ('probe', 'kept-2', now())"))

        def probes():
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT event_id FROM validation.inbox WHERE handler = 'probe' "
                                            "ORDER BY 1")).scalars().all()

        pruner.wake()  # (its hour's wait cut short)
        wait_until(lambda: probes() == ["kept-1", "kept-2"], timeout=15, message="ids past 30 days forgotten")
    finally:
        stop_edge_first(runner)


def test_a_service_prunes_at_start_not_an_hour_after(settings):
    """The first prune waited an hour: a process restarted more often than that (deploys, a
    crash loop) never pruned at all (a soak probe)."""
    from services.runner import build, start_edge_last, stop_edge_first

    engine = engine_for(settings.database_url)
    runner = build(settings.replace(inbox_days=30), ["validation"])  # (its schema, before the rows)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO validation.inbox (handler, event_id, processed_at) VALUES "
                             "('probe-start', 'old', now() - interval '31 days'), ('probe-start', 'new', now())"))
    start_edge_last(runner)
    try:
        def probes():
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT event_id FROM validation.inbox WHERE handler = 'probe-start'")
                                    ).scalars().all()
        wait_until(lambda: probes() == ["new"], timeout=15, message="the old id forgotten at start")
    finally:
        stop_edge_first(runner)
