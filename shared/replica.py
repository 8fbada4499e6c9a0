"""A service's own copy of the registry's metadata.

The registry owns metadata. Submission, validation, aggregation and notify
each keep a replica in their own schema (``md_*`` tables) and an in-memory
snapshot of it, so checking a return, evaluating its rules, rolling it up or
finding its supervisors needs no call to the registry.

How a replica stays current:

* **Events.** ``registry.metadata_changed`` carries the new state of every
  changed object, each stamped with the registry version at which it last
  changed, plus ``since``/``version`` (the registry version before and after
  the change). Objects are upserted only when their version is newer, so
  events may be applied in any order and more than once.
* **Catch-up.** ``md_state.version`` advances only over contiguous changes
  (``since <= version``). If an event arrives after a gap (one still in
  flight, one dead-lettered, a schema reset), the replica asks the registry
  for everything since its own version (``registry.metadata_since``) and
  applies that. Each service also catches up once at start.
* **Read-your-writes for clients.** The gateway answers ``POST /api/metadata``
  only after every replica reports the new version (``await_metadata``), so a
  client that imports a data set and submits a return right after is never
  told the data set is unknown. Instances of one service share their replica's
  tables but each holds a snapshot, checked for a newer version every
  ``VERSION_CHECK_SECONDS``: submission, before refusing a return, compares its
  snapshot with the tables and checks again on a newer one.
"""
from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import threading
import time
from dataclasses import dataclass, field

import eventlet
import sqlalchemy as sa
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert

from shared.config import Settings
from shared.db import engine_for, engine_outside_pool
from shared.events import Transient, subscribe
from shared.periods import Period, PeriodError, today
from shared.schemas.metadata import MetadataChangesSchema

log = logging.getLogger(__name__)

CHUNK = 1000


# ------------------------------------------------------------------ tables

def replica_tables(metadata: sa.MetaData) -> "ReplicaTables":
    t = ReplicaTables()
    t.org_unit = sa.Table(
        "md_org_unit", metadata,
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("opening_date", sa.Date, nullable=False),
        sa.Column("closed_date", sa.Date),
        sa.Column("generated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    t.org_unit_path = sa.Table(
        "md_org_unit_path", metadata,
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("valid_from", sa.Date, primary_key=True),
        sa.Column("valid_to", sa.Date),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
    )
    t.data_element = sa.Table(
        "md_data_element", metadata,
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_lo", sa.Text),
        sa.Column("value_type", sa.Text, nullable=False),
        sa.Column("aggregation_type", sa.Text, nullable=False),
        sa.Column("combos", ARRAY(sa.Text), nullable=False),
        sa.Column("outliers", JSONB, nullable=False, server_default="{}"),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    t.data_set = sa.Table(
        "md_data_set", metadata,
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
        sa.Column("assignment_ends", JSONB, nullable=False, server_default="{}"),
    )
    t.validation_rule = sa.Table(
        "md_validation_rule", metadata,
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
    )
    t.focal_point = sa.Table(
        "md_focal_point", metadata,
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("org_unit", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("digest", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("retired_on", sa.Date),
    )
    t.state = sa.Table(
        "md_state", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    return t


@dataclass
class ReplicaTables:
    org_unit: sa.Table = None
    org_unit_path: sa.Table = None
    data_element: sa.Table = None
    data_set: sa.Table = None
    validation_rule: sa.Table = None
    focal_point: sa.Table = None
    state: sa.Table = None

    @property
    def objects(self) -> dict[str, sa.Table]:
        """Change-list key -> table of the versioned objects."""
        return {"org_units": self.org_unit, "data_elements": self.data_element,
                "data_sets": self.data_set, "validation_rules": self.validation_rule,
                "focal_points": self.focal_point}


# ------------------------------------------------------------- snapshot

@dataclass(frozen=True)
class UnitPath:
    path: str
    level: int
    valid_from: dt.date
    valid_to: dt.date | None  # exclusive

    def valid_on(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)


@dataclass(frozen=True)
class OrgUnit:
    code: str
    name: str
    name_lo: str | None
    opening_date: dt.date
    closed_date: dt.date | None
    generated: bool
    paths: tuple[UnitPath, ...]

    def path_on(self, day: dt.date) -> UnitPath | None:
        for p in self.paths:
            if p.valid_on(day):
                return p
        return None

    @property
    def current(self) -> UnitPath:
        """Where the unit sits today (or last sat, or will first sit)."""
        return self.path_on(today()) or max(self.paths, key=lambda p: p.valid_from)

    def open_during(self, period: Period) -> bool:
        return self.opening_date <= period.end and (self.closed_date is None
                                                     or self.closed_date >= period.start)


@dataclass(frozen=True)
class DataElement:
    code: str
    name: str
    name_lo: str | None
    value_type: str
    aggregation_type: str
    combos: tuple[str, ...]
    outliers: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class DataSet:
    code: str
    name: str
    name_lo: str | None
    period_type: str
    data_elements: tuple[str, ...]
    org_unit_level: int | None
    org_units: frozenset[str]
    timely_days: int
    expiry_days: int
    # units taken out of org_units, and the day each was: theirs to correct for the periods
    # that begin before it, counted where they reported (the registry's assignment_ends)
    assignment_ends: dict[str, dt.date] = field(default_factory=dict, compare=False)

    def assignment_ends_json(self) -> str:
        """``assignment_ends`` as the JSON document ``taken_out_sql``'s ``ends`` reads."""
        return json.dumps({ou: day.isoformat() for ou, day in self.assignment_ends.items()})


@dataclass(frozen=True)
class ValidationRule:
    code: str
    name: str
    name_lo: str | None
    importance: str
    left: str
    operator: str
    right: str
    missing_value_strategy: str
    data_set: str | None


@dataclass(frozen=True)
class FocalPoint:
    code: str
    name: str
    org_unit: str
    role: str
    email: str | None
    phone: str | None
    language: str
    digest: bool
    retired_on: dt.date | None = None  # left: addressed no more


def assigned_sql(unit: str, level: str, explicit: str, ds_level: str) -> str:
    """Whether a unit is assigned a data set now, as an SQL condition for the statements that
    judge it over many units at once (completeness, the deadline check, a history chunk): each
    argument an SQL expression for the unit's code, its level as the period begins, and the
    data set's listed units (text[]) and level."""
    return f"({unit} = ANY({explicit}) OR {level} IS NOT DISTINCT FROM {ds_level})"


def taken_out_sql(unit: str, day: str, ends: str) -> str:
    """Whether a unit taken out of the data set's list was in it when the period began
    (``day``: at its opening if that is later), ``ends`` the data set's assignment_ends
    (jsonb); never null (``NOT`` of a null let a history chunk's unassigned district in)."""
    return f"coalesce(CAST({ends}->>{unit} AS date) > {day}, false)"


class Metadata:
    """An immutable snapshot of a replica at one version."""

    def __init__(self, version: int, org_units, data_elements, data_sets, rules, focal_points):
        self.version = version
        self.org_units: dict[str, OrgUnit] = org_units
        self.data_elements: dict[str, DataElement] = data_elements
        self.data_sets: dict[str, DataSet] = data_sets
        self.rules: dict[str, ValidationRule] = rules
        self.focal_points: dict[str, FocalPoint] = focal_points
        self.rules_by_data_set: dict[str | None, list[ValidationRule]] = {}
        for rule in rules.values():
            self.rules_by_data_set.setdefault(rule.data_set, []).append(rule)
        self.focal_points_by_unit: dict[str, list[FocalPoint]] = {}
        for fp in focal_points.values():
            if fp.retired_on is None:  # (the people alerts go to; focal_points keeps them all)
                self.focal_points_by_unit.setdefault(fp.org_unit, []).append(fp)
        self._placed: tuple[dt.date, dict[str, UnitPath]] | None = None
        # what services work out from the snapshot once (validation: a data set's rules)
        self.derived: dict = {}

    def placed_on(self, day: dt.date) -> dict[str, UnitPath]:
        """Every unit's place on ``day`` (else its latest, as ``OrgUnit.current``), worked out
        once per day and snapshot: where the roots are read from."""
        placed = self._placed
        if placed is None or placed[0] != day:
            placed = (day, {code: u.path_on(day) or max(u.paths, key=lambda p: p.valid_from)
                            for code, u in self.org_units.items() if u.paths})
            self._placed = placed  # a race only works it out twice
        return placed[1]

    def roots(self, day: dt.date) -> list[str]:
        return sorted(code for code, where in self.placed_on(day).items() if where.level == 1)

    def path_on(self, org_unit: str, day: dt.date) -> UnitPath | None:
        unit = self.org_units.get(org_unit)
        return unit.path_on(day) if unit else None

    def period_path(self, org_unit: str, start: dt.date, end: dt.date) -> str:
        """Where a unit's data for a period belongs: its path as of the period's start (the
        period belongs where it began), or at its end for a unit that opened during it.
        The place aggregation stores a value under, and what ``in_subtree`` asks."""
        unit = self.org_units[org_unit]
        where = unit.path_on(start) or unit.path_on(end) or unit.current
        return where.path

    def in_subtree(self, org_unit: str, start: dt.date, end: dt.date, root: str) -> bool:
        """Was the unit in ``root``'s subtree for the period (as analytics counts it)?"""
        return f"/{root}/" in self.period_path(org_unit, start, end)

    def held_throughout(self, org_unit: str, start: dt.date, end: dt.date, root: str) -> bool:
        """Is every value of the unit dated from ``start`` to ``end`` ``root``'s? A period's
        data is where the unit was on the period's first day (``period_path``), and no period
        type is finer than a month: the unit must have been in ``root``'s subtree on
        ``start`` and on the first day of ``end``'s month. (July of a village moved on 15
        July is its old district's; the year is neither district's alone.) How reads by a
        unit's own code are scoped: a village moved away is still its old district's to read
        for its periods there, and the new district's from the move on, not before."""
        unit = self.org_units[org_unit]
        held = (unit.path_on(start), unit.path_on(max(start, end.replace(day=1))))
        return all(p is not None and f"/{root}/" in p.path for p in held)

    def place_in(self, org_unit: str, period: str, root: str) -> bool:
        """``in_subtree`` for a place as data names it (a unit code, a period code): whose
        a place is, for scope as for aggregates. False for a unit or period it can't read."""
        if org_unit not in self.org_units:
            return False
        try:
            p = Period.parse(period)
        except PeriodError:
            return False
        return self.in_subtree(org_unit, p.start, p.end, root)

    def current_path(self, org_unit: str) -> str | None:
        """Where the unit sits today (``/LA/03/0301/``), what scope is checked against;
        None for a code this replica does not know."""
        unit = self.org_units.get(org_unit)
        where = unit.current if unit else None
        return where.path if where else None

    def assigned(self, data_set: DataSet, org_unit: str, day: dt.date | None = None) -> bool:
        """Is the data set assigned to the unit (explicitly, or by the unit's level on ``day``)?
        A unit taken out of the data set's list is, for the periods begun before that day."""
        if org_unit in data_set.org_units:
            return True
        ended = data_set.assignment_ends.get(org_unit)
        if ended is not None and day is not None and day < ended:
            return True
        if data_set.org_unit_level is None:
            return False
        unit = self.org_units.get(org_unit)
        if unit is None:
            return False
        where = unit.path_on(day) if day else unit.current
        return where is not None and where.level == data_set.org_unit_level

    def ever_in(self, org_unit: str, root: str) -> bool:
        """Is or was the unit ever in ``root``'s subtree (itself included)?"""
        mark = f"/{root}/"
        return any(mark in p.path for p in self.org_units[org_unit].paths)

    def subtree(self, org_unit: str) -> set[str]:
        """Every unit that is or ever was in ``org_unit``'s subtree (itself included)."""
        return {code for code in self.org_units if self.ever_in(code, org_unit)}

    def ancestors(self, org_unit: str, day: dt.date | None = None) -> list[str]:
        """Codes from the unit itself up to the root, as of ``day`` (default today)."""
        unit = self.org_units.get(org_unit)
        if unit is None:
            return []
        where = unit.path_on(day) if day else unit.current
        if where is None:
            return [org_unit]
        return list(reversed([c for c in where.path.split("/") if c]))


def _load(conn: sa.Connection, t: ReplicaTables, version: int) -> Metadata:
    paths: dict[str, list[UnitPath]] = {}
    for r in conn.execute(sa.select(t.org_unit_path).order_by(t.org_unit_path.c.code,
                                                              t.org_unit_path.c.valid_from)):
        paths.setdefault(r.code, []).append(UnitPath(r.path, r.level, r.valid_from, r.valid_to))
    org_units = {r.code: OrgUnit(r.code, r.name, r.name_lo, r.opening_date, r.closed_date, r.generated,
                                 tuple(paths.get(r.code, ())))
                 for r in conn.execute(sa.select(t.org_unit))}
    data_elements = {r.code: DataElement(r.code, r.name, r.name_lo, r.value_type, r.aggregation_type,
                                         tuple(r.combos), dict(r.outliers or {}))
                     for r in conn.execute(sa.select(t.data_element))}
    data_sets = {r.code: DataSet(r.code, r.name, r.name_lo, r.period_type, tuple(r.data_elements),
                                 r.org_unit_level, frozenset(r.org_units), r.timely_days, r.expiry_days,
                                 {ou: dt.date.fromisoformat(day) for ou, day in (r.assignment_ends or {}).items()})
                 for r in conn.execute(sa.select(t.data_set))}
    rules = {r.code: ValidationRule(r.code, r.name, r.name_lo, r.importance, r.left, r.operator,
                                    r.right, r.missing_value_strategy, r.data_set)
             for r in conn.execute(sa.select(t.validation_rule))}
    focal_points = {r.code: FocalPoint(r.code, r.name, r.org_unit, r.role, r.email, r.phone,
                                       r.language, r.digest, r.retired_on)
                    for r in conn.execute(sa.select(t.focal_point))}
    return Metadata(version, org_units, data_elements, data_sets, rules, focal_points)


# ------------------------------------------------------------ applying

def _rows(key: str, objects: list[dict]) -> list[dict]:
    if key == "org_units":
        return [{k: o[k] for k in ("code", "name", "name_lo", "opening_date", "closed_date",
                                   "generated", "version")} for o in objects]
    if key == "data_elements":
        return [{**{k: o[k] for k in ("code", "name", "name_lo", "value_type", "aggregation_type",
                                      "combos", "version")},
                 "outliers": {k: (str(v) if v is not None and k in ("min", "max") else v)
                              for k, v in (o.get("outliers") or {}).items()}}
                for o in objects]
    if key == "data_sets":
        return [{k: o[k] for k in ("code", "name", "name_lo", "period_type", "data_elements",
                                   "org_unit_level", "org_units", "timely_days", "expiry_days",
                                   "assignment_ends", "version")} for o in objects]
    if key == "validation_rules":
        return [{k: o[k] for k in ("code", "name", "name_lo", "importance", "left", "operator",
                                   "right", "missing_value_strategy", "data_set", "version")}
                for o in objects]
    if key == "focal_points":
        return [{**{k: o[k] for k in ("code", "name", "org_unit", "role", "email", "phone", "language",
                                      "digest", "version")}, "retired_on": o.get("retired_on")}
                for o in objects]
    raise KeyError(key)


def apply_changes(conn: sa.Connection, t: ReplicaTables, changes: dict) -> bool:
    """Apply a ``MetadataChanges`` payload; True when it continued the replica's history."""
    for key, table in t.objects.items():
        objects = changes.get(key) or []
        rows = _rows(key, objects)
        changed: set[str] = set()
        if rows:
            # one statement given the rows as executemany parameters: SQLAlchemy batches them
            # into multi-row VALUES from one cached compilation (``insert().values(rows)``
            # compiled every row's bind parameters anew: 20,000 units took each replica ~12 s
            # of one core, the hub stalled, /health waited 10 s and heartbeats were missed)
            stmt = insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.code],
                set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != "code"},
                where=table.c.version < stmt.excluded.version,
            ).returning(table.c.code)
            changed.update(conn.execute(stmt, rows).scalars())
        if key == "org_units" and changed:
            # a unit's paths are replaced whole when the unit itself was newer
            paths = [{"code": o["code"], "path": p["path"], "level": p["level"],
                      "valid_from": p["valid_from"], "valid_to": p.get("valid_to")}
                     for o in objects if o["code"] in changed for p in o["paths"]]
            codes = sorted(changed)
            for i in range(0, len(codes), CHUNK):
                conn.execute(t.org_unit_path.delete().where(
                    t.org_unit_path.c.code.in_(codes[i:i + CHUNK])))
            if paths:
                conn.execute(insert(t.org_unit_path), paths)
    advanced = conn.execute(
        t.state.update().where(t.state.c.id == 1, t.state.c.version >= changes["since"])
        .values(version=sa.func.greatest(t.state.c.version, changes["version"]),
                updated_at=sa.func.now())).rowcount
    return advanced == 1


def replica_version(conn: sa.Connection, t: ReplicaTables) -> int:
    return conn.execute(sa.select(t.state.c.version).where(t.state.c.id == 1)).scalar() or 0


# ------------------------------------------------------------ dependency

# How long a snapshot counts as current without asking the database for the replica's
# version (one round trip per handler otherwise: 7% of a validation process's CPU).
# A change this process applies, or confirms to the gateway, invalidates at once; an
# instance that did not apply it sees it within this bound.
VERSION_CHECK_SECONDS = 0.25


class _Cache:
    """The process-wide snapshot of one service's replica, reloaded when its version moves."""

    def __init__(self):
        self.snapshot: Metadata | None = None
        self.lock = threading.Lock()  # green under eventlet
        self.checked_until = 0.0      # monotonic time until which the snapshot counts as current


_caches: dict[tuple[str, str], _Cache] = {}


def _out_of_the_collectors_way() -> None:
    """Put what the process holds now, the new snapshot with it, beyond the cyclic garbage
    collector's reach. A snapshot of national metadata is ~150,000 objects that live until
    the next metadata change, yet every full collection walked them again: under load
    23-26 full collections in 30 s per process, each stopping every greenlet for 40-120 ms
    (gc.callbacks during a national burst; tests/bench/RESULTS.md).
    Frozen objects are still freed by reference counting when a newer snapshot replaces
    them; the full collection first (with the frozen set given back) frees any cycles
    among the old ones, so nothing frozen before is kept alive by this. Once per
    snapshot load: at start and on a metadata change."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ReplicaAccess:
    def __init__(self, provider: "Replica"):
        self.provider = provider
        self.tables = provider.tables

    def version(self) -> int:
        with self.provider.engine.connect() as conn:
            return replica_version(conn, self.tables)

    def current(self, conn: sa.Connection | None = None) -> Metadata:
        """The newest snapshot (one cheap version query; a reload only after a change).
        Without ``conn`` no connection is held while the reload is waited for: every worker
        of a process just started asks at once."""
        cache = self.provider.cache
        snap = cache.snapshot
        if snap is not None and time.monotonic() < cache.checked_until:
            return snap  # checked a moment ago: no connection needed at all
        if conn is None:
            with self.provider.engine.connect() as own:
                version = replica_version(own, self.tables)
        else:
            version = replica_version(conn, self.tables)
        if snap is not None and snap.version == version:
            cache.checked_until = time.monotonic() + VERSION_CHECK_SECONDS
            return snap
        with cache.lock:
            snap = cache.snapshot
            if snap is None or snap.version != version:
                started = time.perf_counter()
                snap = self._load_consistent()
                cache.snapshot = snap
                _out_of_the_collectors_way()
                cache.checked_until = time.monotonic() + VERSION_CHECK_SECONDS
                log.info("%s metadata replica loaded at version %d in %.0f ms", self.tables.state.schema,
                         version, (time.perf_counter() - started) * 1000)
        return snap

    def _load_consistent(self) -> Metadata:
        """The replica read in one snapshot of the database, version and all: read table by
        table under READ COMMITTED, a change applied in between gave a unit without its
        paths (paths read before, the unit after: "max() arg is an empty sequence" in
        aggregation), or a data set naming an element not loaded. On a connection of its own,
        not the pool's: the workers waiting for this load may hold all of those."""
        outside = engine_outside_pool(self.provider.engine)
        with outside.connect().execution_options(isolation_level="REPEATABLE READ") as own:
            with own.begin():
                return _load(own, self.tables, replica_version(own, self.tables))

    def as_of(self, conn: sa.Connection, md: Metadata) -> Metadata:
        """``md``, or the newer snapshot if ``conn`` sees a newer version committed (a batch
        that took its locks after a metadata change committed must not write by the old)."""
        if replica_version(conn, self.tables) == md.version:
            return md
        self.invalidate()
        return self.current(conn)

    def invalidate(self) -> None:
        """Check the version at the next ``current()``: this process has just changed it."""
        self.provider.cache.checked_until = 0.0

    def apply(self, conn: sa.Connection, changes: dict) -> bool:
        contiguous = apply_changes(conn, self.tables, changes)
        if self.provider.on_apply is not None:
            self.provider.on_apply(conn, changes)
        return contiguous


class Replica(DependencyProvider):
    """``self.replica`` of a service that keeps a metadata replica.

    ``on_apply(conn, changes)`` runs in the same transaction as every applied
    change, for a service whose own data depends on metadata (aggregation
    re-paths stored values when units move).
    """

    def __init__(self, tables: ReplicaTables, on_apply=None):
        self.tables = tables
        self.on_apply = on_apply

    def setup(self):
        self.settings = Settings.of(self.container)
        self.engine = engine_for(self.settings.database_url)
        key = (self.settings.database_url, self.tables.state.schema)
        self.cache = _caches.setdefault(key, _Cache())

    def start(self):
        self._gt = self.container.spawn_managed_thread(self._catch_up_at_start,
                                                       identifier="replica-catch-up")

    def stop(self):
        gt = getattr(self, "_gt", None)
        if gt is not None:
            gt.kill()

    kill = stop

    def _catch_up_at_start(self):
        """Fetch what the registry changed while this service was away (or before it existed)."""
        from nameko.standalone.rpc import ClusterRpcProxy

        delay = 0.5
        while True:
            try:
                access = ReplicaAccess(self)
                since = access.version()
                with ClusterRpcProxy(self.container.config, timeout=30) as cluster:
                    changes = MetadataChangesSchema().load(cluster.registry.metadata_since(since))
                with self.engine.begin() as conn:
                    access.apply(conn, changes)
                access.invalidate()
                log.info("%s replica caught up from version %d to %d", self.tables.state.schema,
                         since, changes["version"])
                return
            except Exception as exc:  # registry not up yet, broker hiccup: try again
                log.info("%s replica catch-up not possible yet (%s); retrying in %.0fs",
                         self.tables.state.schema, exc, delay)
                eventlet.sleep(delay)
                delay = min(delay * 2, 30)

    def get_dependency(self, worker_ctx):
        return ReplicaAccess(self)


class KeepsMetadataReplica:
    """Mixin for services with a replica: the event handler and the RPCs the gateway uses.

    The service must define ``db`` (shared.delivery.Database), ``replica``
    (Replica) and ``registry_rpc`` (RpcProxy("registry")).
    """

    registry_rpc = RpcProxy("registry")

    def replica_knowing(self, returns: list[dict]) -> Metadata:
        """The replica, if it knows every code these returns name; else ``Transient``.

        Submission checked each code against its own replica before the return was
        stored, so a code unknown here means this replica is behind (a restart before its
        catch-up, a schema reset): the return waits and is retried, it is never judged
        or applied on metadata that does not have it yet (validation once rejected such
        a return: "unknown data set").

        The version is checked for every batch, not once per ``VERSION_CHECK_SECONDS``: the
        gateway answers an import once one instance of each service has it, and another
        instance's snapshot could judge returns on the old rules for that moment (3 of 90
        returns breaking a HIGH rule tightened just before were accepted). One query a batch."""
        self.replica.invalidate()
        md = self.replica.current()
        unknown = {r["data_set"] for r in returns} - set(md.data_sets)
        unknown |= {v["org_unit"] for r in returns for v in r["values"]} - set(md.org_units)
        unknown |= {v["data_element"] for r in returns for v in r["values"]} - set(md.data_elements)
        if unknown:
            raise Transient(f"metadata not yet replicated here: {sorted(unknown)}")
        return md

    @subscribe("registry", "metadata_changed")
    def apply_metadata_changes(self, event):
        with self.db.consume(event) as tx:
            if tx.duplicate:
                return
            contiguous = self.replica.apply(tx.conn, event.data)
        self.replica.invalidate()  # committed: the next return sees the new metadata
        if not contiguous:
            self.catch_up_metadata()

    def catch_up_metadata(self) -> int:
        since = self.replica.version()
        changes = MetadataChangesSchema().load(self.registry_rpc.metadata_since(since))
        with self.db.transaction() as tx:
            self.replica.apply(tx.conn, changes)
        self.replica.invalidate()
        log.info("%s replica caught up from version %d to %d", self.name, since, changes["version"])
        return changes["version"]

    @rpc
    def await_metadata(self, version: int, timeout: float = 15.0) -> int:
        """Return once this service's replica has applied registry version ``version``."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.replica.version()
            if current >= version:
                self.replica.invalidate()
                return current
            if time.monotonic() >= deadline:
                # the event is late or lost: fetch the changes directly
                return self.catch_up_metadata()
            eventlet.sleep(0.02)
