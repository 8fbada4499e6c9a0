"""Alembic, one history per service schema.

Each service has ``services/<name>/migrations`` with its own revisions and
its own ``alembic_version`` table inside its schema. ``upgrade(settings,
service)`` runs them under a PostgreSQL advisory lock, so two instances of a
service starting together migrate once. The tables every service has (outbox,
inbox, metadata replica) are created by the helpers below, called from each
service's first revision: a revision is a frozen snapshot, so these helpers
are never edited once released; later changes go into new helpers called
from new revisions.
"""
from __future__ import annotations

import contextlib
import logging
import os

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shared.config import Settings
from shared.db import engine_for, ensure_database

log = logging.getLogger(__name__)

SERVICES_WITH_SCHEMA = ("registry", "submission", "validation", "aggregation", "notify")


def _script_location(service: str) -> str:
    import services

    return os.path.join(os.path.dirname(services.__file__), service, "migrations")


def upgrade(settings: Settings, service: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring ``service``'s schema to ``revision``, the newest by default (creating the database
    if missing); the revisions it was at and is at (None: no schema yet)."""
    with _alembic(settings, service) as cfg:
        before = _revision(cfg)
        command.upgrade(cfg, revision)
        return before, _revision(cfg)


def _revision(cfg) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(cfg.attributes["connection"], opts={
        "version_table_schema": cfg.attributes["schema"]}).get_current_revision()


def downgrade(settings: Settings, service: str, revision: str) -> None:
    """Take ``service``'s schema back to ``revision`` (tests of a revision's data move)."""
    with _alembic(settings, service) as cfg:
        command.downgrade(cfg, revision)


@contextlib.contextmanager
def _alembic(settings: Settings, service: str):
    ensure_database(settings.database_url)
    engine = engine_for(settings.database_url)
    cfg = Config()
    cfg.set_main_option("script_location", _script_location(service))
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                     {"k": f"statnet.migrate.{service}"})
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{service}"'))
        cfg.attributes["connection"] = conn
        cfg.attributes["schema"] = service
        yield cfg


def run_env() -> None:
    """Body of every service's ``migrations/env.py``."""
    from alembic import context

    cfg = context.config
    conn = cfg.attributes["connection"]
    schema = cfg.attributes["schema"]
    context.configure(connection=conn, version_table_schema=schema, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(), **kw)


def create_delivery_tables_v1(op, schema: str) -> None:
    """Outbox and inbox (shared.delivery)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False, unique=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("message", JSONB, nullable=False),
        sa.Column("correlation_id", sa.Text),
        _ts("created_at"),
        schema=schema)
    op.create_table(
        "inbox",
        sa.Column("handler", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        _ts("processed_at"),
        schema=schema)
    op.create_index("inbox_processed_at", "inbox", ["processed_at"], schema=schema)


def outbox_message_as_json_v2(op, schema: str) -> None:
    """The outbox keeps each message as the JSON text it was encoded to (``json``, not
    ``jsonb``): nothing queries inside it, the relay sends it as it is, and ``jsonb``
    cost PostgreSQL a parse into its binary form on insert and a re-encoding (with
    spaces added) on every relay read, about twice the cost of ``json`` (measured)."""
    op.execute(f"ALTER TABLE {schema}.outbox ALTER COLUMN message TYPE json USING CAST(message AS json)")


def outbox_message_as_jsonb_v1(op, schema: str) -> None:
    """Downgrade of ``outbox_message_as_json_v2``."""
    op.execute(f"ALTER TABLE {schema}.outbox ALTER COLUMN message TYPE jsonb USING CAST(message AS jsonb)")


def create_replica_tables_v1(op, schema: str) -> None:
    """Metadata replica (shared.replica)."""
    op.create_table(
        "md_org_unit",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("opening_date", sa.Date, nullable=False),
        sa.Column("closed_date", sa.Date),
        sa.Column("generated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.BigInteger, nullable=False),
        schema=schema)
    op.create_table(
        "md_org_unit_path",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("valid_from", sa.Date, primary_key=True),
        sa.Column("valid_to", sa.Date),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        schema=schema)
    op.execute(f'CREATE INDEX md_org_unit_path_path ON "{schema}".md_org_unit_path (path text_pattern_ops)')
    op.create_table(
        "md_data_element",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("value_type", sa.Text, nullable=False),
        sa.Column("aggregation_type", sa.Text, nullable=False),
        sa.Column("combos", ARRAY(sa.Text), nullable=False),
        sa.Column("outliers", JSONB, nullable=False, server_default="{}"),
        sa.Column("version", sa.BigInteger, nullable=False),
        schema=schema)
    op.create_table(
        "md_data_set",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("period_type", sa.Text, nullable=False),
        sa.Column("data_elements", ARRAY(sa.Text), nullable=False),
        sa.Column("org_unit_level", sa.Integer),
        sa.Column("org_units", ARRAY(sa.Text), nullable=False),
        sa.Column("timely_days", sa.Integer, nullable=False),
        sa.Column("expiry_days", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        schema=schema)
    op.create_table(
        "md_validation_rule",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("importance", sa.Text, nullable=False),
        sa.Column("left", sa.Text, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("right", sa.Text, nullable=False),
        sa.Column("missing_value_strategy", sa.Text, nullable=False),
        sa.Column("data_set", sa.Text),
        sa.Column("version", sa.BigInteger, nullable=False),
        schema=schema)
    op.create_table(
        "md_focal_point",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("org_unit", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("digest", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.BigInteger, nullable=False),
        schema=schema)
    op.create_table(
        "md_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        _ts("updated_at"),
        schema=schema)
    op.execute(f'INSERT INTO "{schema}".md_state (id, version) VALUES (1, 0)')


def replica_assignment_ends_v1(op, schema: str) -> None:
    """The replica keeps a data set's units taken out of its list, each with the day it was
    (registry 0003, ``data_set.assignment_ends``). Existing data sets have taken none out."""
    op.execute(f"ALTER TABLE {schema}.md_data_set ADD COLUMN assignment_ends jsonb NOT NULL DEFAULT '{{}}'")


def drop_replica_assignment_ends_v1(op, schema: str) -> None:
    """Downgrade of ``replica_assignment_ends_v1``."""
    op.execute(f"ALTER TABLE {schema}.md_data_set DROP COLUMN assignment_ends")


def replica_focal_point_retired_v1(op, schema: str) -> None:
    """The replica keeps a focal point's retirement day (registry 0004, ``retired_on``).

    A retirement (or a data set's units taken out, the revision before) that an instance
    of the version before took while the registry was already new was dropped by its
    schema, yet moved its version on: the next catch-up starts from nothing and rewrites
    the focal points and data sets (their versions set back; the rest, unchanged, stays)."""
    op.execute(f"ALTER TABLE {schema}.md_focal_point ADD COLUMN retired_on date")
    op.execute(f"UPDATE {schema}.md_focal_point SET version = 0")
    op.execute(f"UPDATE {schema}.md_data_set SET version = 0")
    op.execute(f"UPDATE {schema}.md_state SET version = 0")


def drop_replica_focal_point_retired_v1(op, schema: str) -> None:
    """Downgrade of ``replica_focal_point_retired_v1``."""
    op.execute(f"ALTER TABLE {schema}.md_focal_point DROP COLUMN retired_on")
