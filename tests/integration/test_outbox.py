"""``Tx.emit(..., along=...)`` on a real PostgreSQL: a change and its event in one statement,
stored together or not at all."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from shared import db
from shared.delivery import Tx, delivery_tables

SCHEMA = "outbox_along_test"
CHANGE = f"INSERT INTO {SCHEMA}.change (username) VALUES (:username)"


@pytest.fixture
def engine(settings):
    engine = sa.create_engine(db.sqlalchemy_url(settings.database_url), poolclass=sa.pool.NullPool)
    metadata = sa.MetaData(schema=SCHEMA)
    delivery_tables(metadata)
    sa.Table("change", metadata, sa.Column("username", sa.Text, primary_key=True))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
        metadata.create_all(conn)
    yield engine
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {SCHEMA} CASCADE"))
    engine.dispose()


def _emit(conn, username: str) -> Tx:
    outbox = sa.Table("outbox", sa.MetaData(schema=SCHEMA), autoload_with=conn)
    tx = Tx(conn, "registry", outbox)
    tx.emit("user_changed", {"username": username, "role": "reporter", "org_unit": "03"},
            along=(CHANGE, {"username": username}))
    return tx


def _stored(engine) -> tuple[list[str], list[str]]:
    with engine.connect() as conn:
        changes = conn.execute(sa.text(f"SELECT username FROM {SCHEMA}.change ORDER BY 1")).scalars().all()
        events = conn.execute(sa.text(f"SELECT message->'data'->>'username' FROM {SCHEMA}.outbox "
                                      "ORDER BY id")).scalars().all()
    return changes, events


def test_the_change_and_its_event_are_stored_together(engine):
    with engine.begin() as conn:
        assert _emit(conn, "ນາງ ແກ້ວ").emitted == 1
    assert _stored(engine) == (["ນາງ ແກ້ວ"], ["ນາງ ແກ້ວ"])


def test_a_change_that_fails_leaves_no_event(engine):
    with engine.begin() as conn:
        _emit(conn, "kham")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        _emit(conn, "kham")  # the change breaks the primary key: the statement fails whole
    assert _stored(engine) == (["kham"], ["kham"])
