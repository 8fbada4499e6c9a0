"""Every session statnet opens reads times and dates alike, whatever the server is set to."""
from __future__ import annotations

import sqlalchemy as sa

from shared.db import dispose_all, engine_for


def test_a_server_in_another_time_zone_or_date_style_changes_no_time_statnet_writes_as_text(backend):
    """An alert's ``requeued_at`` is written by SQL (``now()`` in JSON), and webhooks show it:
    under a server set to Asia/Vientiane it read +07, under another zone another offset.
    Dates come out ISO under any server DateStyle (psycopg2 sets it)."""
    url = backend.new_database()
    name = sa.engine.make_url(url).database
    probe = sa.text("SELECT CAST(date '2026-03-01' AS text), "
                    "CAST(timestamptz '2026-03-01 17:30:00+00' AS text), current_setting('TimeZone')")
    try:
        with engine_for(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"ALTER DATABASE {name} SET DateStyle = 'SQL, DMY'"))
            conn.execute(sa.text(f"ALTER DATABASE {name} SET TimeZone = 'Asia/Vientiane'"))
        dispose_all()  # sessions opened after the change
        plain = sa.create_engine(engine_for(url).url, poolclass=sa.pool.NullPool)
        with plain.connect() as conn:  # what a session takes from the server: the test can fail
            assert conn.execute(probe).one()[1] == "2026-03-02 00:30:00+07"
        plain.dispose()
        with engine_for(url).connect() as conn:
            assert tuple(conn.execute(probe).one()) == ("2026-03-01", "2026-03-01 17:30:00+00", "UTC")
    finally:
        dispose_all()
        backend.drop_database(url)
