"""The withdrawal of pending alerts about periods before go-live (``deadlines.withdraw_before``)
on a real database, beside a dispatcher that holds what it is sending."""
from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from services.notify import deadlines
from shared import migrations
from shared.db import engine_for

START = dt.date(2026, 2, 15)


def alert(conn, kind: str, recipient: str, period: str, status: str = "PENDING", details: dict | None = None,
          org_unit: str = "V1") -> int:
    return conn.execute(sa.text(
        "INSERT INTO notify.notification (type, recipient, org_unit, data_set, period, channel, status, "
        "next_attempt_at, details) VALUES (:k, :r, :ou, :ds, :pe, 'email', :st, "
        "CASE WHEN :k = 'LATE_DIGEST' THEN now() ELSE timestamptz 'infinity' END, CAST(:d AS jsonb)) RETURNING id"),
        {"k": kind, "r": recipient, "ou": org_unit, "ds": "*" if kind == "LATE_DIGEST" else "DS",
         "pe": period, "st": status, "d": json.dumps(details or {})}).scalar()


def line(period: str, org_unit: str = "V1") -> dict:
    return {"data_set": "DS", "period": period, "org_unit": org_unit, "deadline": "2026-04-10"}


def pending(conn) -> dict[int, tuple]:
    return {r.id: (r.type, r.period, r.details.get("count"), [x["period"] for x in r.details.get("late", [])])
            for r in conn.execute(sa.text("SELECT id, type, period, details FROM notify.notification "
                                          "WHERE status = 'PENDING'"))}


def test_digest_lines_before_go_live_go_whatever_their_alerts_state(settings):
    """A digest re-lists every open late return each day, also one whose alert an earlier
    digest carried (SENT): its line goes by its period, not by a pending alert withdrawn."""
    migrations.upgrade(settings, "notify")
    engine = engine_for(settings.database_url)
    with engine.begin() as conn:
        alert(conn, "LATE_RETURN", "SP", "202601", status="SENT", details={"due_date": "2026-01-31"})
        alert(conn, "LATE_RETURN", "SP", "202603", details={"due_date": "2026-03-31", "delivered_by": "LATE_DIGEST"})
        quarter = alert(conn, "LATE_RETURN", "S1", "2025Q4", details={"due_date": "2025-12-31"})
        digest = alert(conn, "LATE_DIGEST", "SP", "2026-04-20",
                       details={"count": 4, "late": [line("202601"), line("2025Q4"), line("2025"), line("202603")]})
        paper = alert(conn, "LATE_DIGEST", "SP", "2026-02-20", details={"count": 1, "late": [line("202601")]})
    with engine.begin() as conn:
        assert deadlines.withdraw_before(conn, START) == 2  # the quarter's alert, the all-paper digest
    with engine.connect() as conn:
        left = pending(conn)
    assert quarter not in left and paper not in left
    assert left[digest] == ("LATE_DIGEST", "2026-04-20", 1, ["202603"])
    assert [v[1] for v in left.values() if v[0] == "LATE_RETURN"] == ["202603"]


def test_what_the_dispatcher_holds_is_skipped_not_waited_for(settings):
    """The dispatcher holds a digest while it sends it, then marks the alerts it carries:
    the withdrawal takes neither (waiting on them in the other order deadlocked), and the
    next check withdraws what is still pending then."""
    migrations.upgrade(settings, "notify")
    engine = engine_for(settings.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM notify.notification"))
        carried = alert(conn, "LATE_RETURN", "SP", "202601",
                        details={"due_date": "2026-01-31", "delivered_by": "LATE_DIGEST"})
        digest = alert(conn, "LATE_DIGEST", "SP", "2026-03-20", details={"count": 1, "late": [line("202601")]})
        sending = alert(conn, "LATE_RETURN", "S1", "202601", details={"due_date": "2026-01-31"})
    dispatcher = engine.connect()
    try:
        tx = dispatcher.begin()
        dispatcher.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
        dispatcher.execute(sa.text("SELECT id FROM notify.notification WHERE id IN (:a, :b) FOR UPDATE"),
                           {"a": digest, "b": sending})
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))  # waiting would fail here
            assert deadlines.withdraw_before(conn, START) == 0
        # the dispatcher goes on: marks the digest's alerts as it does (dispatcher.DIGESTED)
        dispatcher.execute(sa.text("UPDATE notify.notification SET status = 'SENT' WHERE id IN (:a, :b, :c)"),
                           {"a": digest, "b": carried, "c": sending})
        tx.commit()
    finally:
        dispatcher.close()
    with engine.connect() as conn:
        assert pending(conn) == {}
