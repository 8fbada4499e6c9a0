"""The bulk path: a province bringing in past years (``POST /api/history``).

Years of paper and spreadsheet data are not returns: nobody reviews them one
by one, no alert should fire, and there are millions of values. So history
skips the per-return event flow and goes straight into the aggregates, with
PostgreSQL doing the work a value at a time would cost in Python:

1. the DHIS2 CSV chunk is checked by Python's csv reader (header, ten fields a
   line) and ``COPY``-ed into a temporary table;
2. one statement derives each row's period type and dates, its combo, its
   unit's path as of the period, and one statement lists every problem (unknown
   codes, elements outside the data set, units not assigned or not open,
   malformed, mistyped or future periods, values not of their type), with line
   numbers: any problem refuses the whole chunk (nothing is stored half-way);
3. the values are inserted set-based (upserted where some are there already) with
   a negative ``seq`` that orders history by the load's number (taken as it begins) and
   the file's line (``history_seq``): history may correct history, and a later line wins whichever
   chunk commits first, but it never overwrites a value that came with a return
   (whose seq is positive), and any later return replaces it. A line given twice in
   a chunk is taken at its last. An empty value, or a line marked ``deleted``,
   deletes a loaded value (leaving a tombstone, as a return's deletion does, so an
   earlier line committed later can't bring it back); a return's value it never
   touches;
4. each (data set, unit, period) counts as reported for completeness (not on
   time: its receipt date is unknown); months and quarters are in every total
   at once; a small chunk's yearly totals are rebuilt in its own transaction too,
   while a bulk chunk's unit-years (with its elements) are queued for
   ``YearTotalsRebuilder``, which rebuilds yearly totals in large batches once
   the chunks have paused for a few seconds (a year of history arrives in many
   chunks, a month at a time; rebuilding its rows after each would rewrite them
   a dozen times). ``GET /api/history`` tells how many are pending,
   and ``statnet history load`` waits for none before it reports done.

The value-type rules are the same as ``shared.values.normalise``, written in
SQL; ``tests/integration/test_history.py`` feeds both the same values.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import io
import re
import uuid

import psycopg2.errors
import psycopg2.extensions
import sqlalchemy as sa
from eventlet import tpool

from services.aggregation.facts import refresh_year_totals
from shared import dhis2_csv, serialization
from shared.api import DEFAULT_ATTRIBUTE_COMBOS, DEFAULT_COMBO_UID, error
from shared.periods import FIRST_YEAR, YEARLY, Period, today
from shared.replica import Metadata, assigned_sql, taken_out_sql
from shared.values import MAX_DIGITS, MAX_TEXT, WHITESPACE

COLUMNS = dhis2_csv.COLUMNS
MAX_PROBLEMS = 100
# unit-years a chunk may touch and still have its yearly rows rebuilt in its own transaction
# (each ~2 ms); a bulk load's chunk (400 villages) leaves them to the YearTotalsRebuilder
REBUILD_AT_ONCE = 20

# History's seq: below every return's (positive) and below 0, which history loaded before
# this order existed carries (the oldest history, overwritten by any load). A load's number
# and the file's line make it, so a load begun later wins over an earlier one, and within a
# load a later line over an earlier one, whichever chunk commits first (the loader sends two
# at a time). A load's number comes from ``history_clock`` as it begins: one more than the
# last, and never below the seconds since 2020 of its start (what numbered loads before
# migration 0012, and still numbers those of an older loader, by ``loadStarted``): two
# loads begun in the same second were ordered by their lines, and a one-line correction
# posted right after a chunk lost to it
_SEQ_BASE = -(2 ** 62)
_LINE_BITS = 29                     # 536 million lines a load
_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
MAX_LINE = 2 ** _LINE_BITS - 1
MAX_LOAD = 2 ** 32 - 1

_BEGIN = sa.text("""
UPDATE aggregation.history_clock SET last_load = greatest(last_load + 1, :now) RETURNING last_load
""")
_LAST_LOAD = sa.text("SELECT last_load FROM aggregation.history_clock")
_SEEN = sa.text("UPDATE aggregation.history_clock SET last_load = greatest(last_load, :n)")


def _seconds(at: dt.datetime) -> int:
    return int((at - _EPOCH).total_seconds())


def begin(conn: sa.Connection) -> int:
    """A new load's number. The caller commits at once (a chunk's transaction holding the
    clock's row until its own commit would let one load run at a time)."""
    return conn.execute(_BEGIN, {"now": _seconds(dt.datetime.now(dt.timezone.utc))}).scalar()


def seen(conn: sa.Connection, number: int) -> None:
    """An older loader's number (its ``loadStarted``, up to five minutes ahead of this
    clock): a load begun after it is numbered after it (begun in those minutes, a
    correction lost to the load it corrected). Committed at once, as ``begin``."""
    conn.execute(_SEEN, {"n": number})


def check_begun(conn: sa.Connection, load: int) -> None:
    """A load number a client gives must be one that was given out: a number ahead of the
    clock would put the load after every load still to come."""
    if load > conn.execute(_LAST_LOAD).scalar():
        raise error(400, f"load: {load} was not begun here (POST /api/history/begin gives a load its number)")


def order_of(params: dict) -> tuple[int | None, bool, int | None]:
    """(the load's number, whether the client gave it as ``load``, the file line of the
    chunk's header): ``load`` as ``POST /api/history/begin`` answered it (what ``statnet
    history load`` sends), or an older loader's ``loadStarted`` (an ISO 8601 time with its
    zone: its second is the number), and ``firstLine`` (the file line of the chunk's first
    data line). A chunk sent with neither is a load of its own, numbered as it arrives."""
    load, started, first_line = params.get("load"), params.get("loadStarted"), params.get("firstLine")
    number = None
    if load is not None and started is not None:
        raise error(400, "load and loadStarted: give one (load, from POST /api/history/begin)")
    if load is not None:
        if not re.fullmatch(r"[0-9]{1,10}", str(load)) or not 0 < int(load) <= MAX_LOAD:
            raise error(400, f"load: {load!r} is not a load number (POST /api/history/begin gives one)")
        number = int(load)
    if started is not None:
        try:
            started = dt.datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        except ValueError:
            started = None
        if started is None or started.tzinfo is None:
            raise error(400, f"loadStarted: {params['loadStarted']!r} is not an ISO 8601 time with its zone "
                             "(2026-11-28T06:00:00Z)")
        now = dt.datetime.now(dt.timezone.utc)
        # a start in the future would put the load after every load to come
        if not _EPOCH <= started <= now + dt.timedelta(minutes=5):
            raise error(400, f"loadStarted: {params['loadStarted']!r} is not between 2020 and now")
        number = _seconds(started)
    if first_line is None:
        return number, load is not None, None
    if not re.fullmatch(r"[0-9]{1,10}", str(first_line)) or not 2 <= int(first_line) <= MAX_LINE:
        raise error(400, f"firstLine: {first_line!r} is not a line number of the file's data (2 or more)")
    return number, load is not None, int(first_line) - 2


def history_seq(load: int, line_offset: int) -> int:
    """The seq of the chunk line ``n`` is this plus ``n``: ``line_offset`` is the file line
    of the chunk's header line (its first data line is chunk line 2)."""
    if not 0 <= load <= MAX_LOAD:
        raise ValueError(f"load number {load} is outside 0-{MAX_LOAD}")
    return _SEQ_BASE + (load << _LINE_BITS) + line_offset

_STAGE = f"""
CREATE TEMP TABLE history_in (n int, {", ".join(f"{c} text" for c in COLUMNS)}) ON COMMIT DROP
"""
_COPY = f"COPY history_in (n, {', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)"

_DERIVE = sa.text(r"""
CREATE TEMP TABLE history_rows ON COMMIT DROP AS
WITH periods AS (     -- each period code of the chunk worked out once: a chunk holds a few
    SELECT c.period, t.ptype, d.start_date,
           (d.start_date + CASE t.ptype WHEN 'Monthly' THEN interval '1 month'
                                        WHEN 'Quarterly' THEN interval '3 months'
                                        ELSE interval '1 year' END - interval '1 day')::date AS end_date
    FROM (SELECT DISTINCT period FROM history_in WHERE period IS NOT NULL) c
    CROSS JOIN LATERAL (
        SELECT CASE WHEN c.period ~ '^[0-9]{4}(0[1-9]|1[0-2])$' THEN 'Monthly'
                    WHEN c.period ~ '^[0-9]{4}Q[1-4]$' THEN 'Quarterly'
                    WHEN c.period ~ '^[0-9]{4}$' THEN 'Yearly' END AS ptype) t
    CROSS JOIN LATERAL (     -- no date before the first year, as shared.periods (make_date refuses year 0)
        SELECT CASE WHEN t.ptype IS NULL OR left(c.period, 4) < CAST(:first_year AS text) THEN NULL
                    WHEN t.ptype = 'Monthly' THEN make_date(left(c.period, 4)::int, right(c.period, 2)::int, 1)
                    WHEN t.ptype = 'Quarterly' THEN make_date(left(c.period, 4)::int, right(c.period, 1)::int * 3 - 2, 1)
                    WHEN t.ptype = 'Yearly' THEN make_date(left(c.period, 4)::int, 1, 1) END AS start_date) d
), dated AS (
    SELECT h.*, btrim(coalesce(h.value, ''), :ws) AS raw, x.ptype, x.start_date, x.end_date
    FROM history_in h LEFT JOIN periods x ON x.period = h.period
), places AS (    -- each unit's path as of each period start, looked up once per pair
    SELECT p.orgunit, p.start_date, w.path, w.level
    FROM (SELECT DISTINCT orgunit, start_date FROM dated) p
    JOIN LATERAL (
        SELECT q.path, q.level FROM aggregation.md_org_unit_path q
        WHERE q.code = p.orgunit
        ORDER BY (p.start_date IS NOT NULL AND q.valid_from <= p.start_date
                  AND (q.valid_to IS NULL OR q.valid_to > p.start_date)) DESC, q.valid_from DESC
        LIMIT 1
    ) w ON true
)
SELECT d.n, d.dataelement AS de, d.orgunit AS ou, d.period, d.ptype, d.start_date, d.end_date,
       CASE WHEN d.categoryoptioncombo = :default_uid AND 'default' = ANY(e.combos) THEN 'default'
            ELSE coalesce(nullif(d.categoryoptioncombo, ''),
                          CASE WHEN cardinality(e.combos) = 1 THEN e.combos[1] END) END AS combo,
       e.code IS NOT NULL AS de_known, e.value_type, e.combos,
       u.code IS NOT NULL AS ou_known, u.opening_date, u.closed_date,
       w.path, w.level, d.raw, d.value AS original,
       CASE WHEN btrim(d.comment, :ws) <> '' THEN d.comment END AS comment, nullif(btrim(d.storedby), '') AS stored_by,
       d.followup, lower(btrim(coalesce(d.followup, ''))) AS followup_word,
       coalesce(d.attributeoptioncombo, '') AS aoc
FROM dated d
LEFT JOIN aggregation.md_data_element e ON e.code = d.dataelement
LEFT JOIN aggregation.md_org_unit u ON u.code = d.orgunit
LEFT JOIN places w ON w.orgunit = d.orgunit AND w.start_date IS NOT DISTINCT FROM d.start_date
""")

# the same acceptance as shared.values.normalise, with its bound (MAX_DIGITS either side of
# the point). Each cast only inside a CASE branch its pattern guards: CASE fixes the order,
# AND does not
_DIGITS = f"length(ltrim(split_part(ltrim(r.raw, '+-'), '.', 1), '0')) <= {MAX_DIGITS}"
_NUMERIC = "'^[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]{1,3})?$'"
_VALUE_OK = rf"""
CASE r.value_type
    WHEN 'INTEGER' THEN r.raw ~ '^[+-]?[0-9]+(\.0*)?$' AND {_DIGITS}
    WHEN 'INTEGER_ZERO_OR_POSITIVE' THEN (r.raw ~ '^\+?[0-9]+(\.0*)?$' OR r.raw ~ '^-0+(\.0*)?$') AND {_DIGITS}
    WHEN 'NUMBER' THEN CASE WHEN r.raw ~ {_NUMERIC}
                            THEN abs(r.raw::numeric) < 1e{MAX_DIGITS}
                                 AND scale(trim_scale(r.raw::numeric)) <= {MAX_DIGITS}
                            ELSE false END
    WHEN 'PERCENTAGE' THEN CASE WHEN r.raw ~ {_NUMERIC}
                                THEN r.raw::numeric BETWEEN 0 AND 100
                                     AND scale(trim_scale(r.raw::numeric)) <= {MAX_DIGITS}
                                ELSE false END
    WHEN 'BOOLEAN' THEN lower(r.raw) IN ('true', 'false', '1', '0')
    WHEN 'TEXT' THEN length(r.original) <= {MAX_TEXT}
    ELSE false
END
"""

# Each check on a staged row r: (object, value, message, the condition under which r has the problem).
_CHECKS = [
    ("dataelement", "r.de", "'unknown data element ' || quote_literal(coalesce(r.de, ''))",
     "NOT r.de_known"),
    ("dataelement", "r.de", "'data element ' || quote_literal(r.de) || ' is not in data set ' || quote_literal(:ds)",
     "r.de_known AND NOT r.de = ANY(CAST(:elements AS text[]))"),
    ("orgunit", "r.ou", "'unknown org unit ' || quote_literal(coalesce(r.ou, ''))",
     "NOT r.ou_known"),
    ("period", "r.period", "'period ' || quote_literal(coalesce(r.period, '')) || ' is not a Monthly '"
     " || '(YYYYMM), Quarterly (YYYYQn) or Yearly (YYYY) period'",
     "r.ptype IS NULL"),
    ("period", "r.period", "'period ' || quote_literal(r.period) || ' is ' || r.ptype"
     " || ', but data set ' || quote_literal(:ds) || ' is ' || :ptype",
     "r.ptype IS NOT NULL AND r.ptype <> :ptype"),
    ("period", "r.period", "'period ' || quote_literal(r.period) || ' is before ' || :first_year",
     "r.ptype IS NOT NULL AND r.start_date IS NULL"),
    ("period", "r.period", "'period ' || quote_literal(r.period) || ' is in the future'",
     "r.start_date > :today"),
    ("categoryoptioncombo", "r.combo", "'category option combo ' || coalesce(quote_literal(r.combo), 'missing')"
     " || ' for data element ' || quote_literal(r.de) || ' (one of ' || array_to_string(r.combos, ', ') || ')'",
     "r.de_known AND (r.combo IS NULL OR NOT r.combo = ANY(r.combos))"),
    ("orgunit", "r.ou", "'org unit ' || quote_literal(r.ou) || ' is not assigned data set ' || quote_literal(:ds)",
     "r.ou_known AND r.start_date IS NOT NULL"
     " AND NOT (" + assigned_sql("r.ou", "r.level", "CAST(:explicit AS text[])", "CAST(:level AS int)")
     + " OR " + taken_out_sql("r.ou", "greatest(r.start_date, r.opening_date)", "CAST(:ends AS jsonb)") + ")"),
    ("orgunit", "r.ou", "'org unit ' || quote_literal(r.ou) || ' is not open in period ' || r.period",
     "r.ou_known AND r.start_date IS NOT NULL AND (r.opening_date > r.end_date OR r.closed_date < r.start_date)"),
    # as intake: statnet keeps no attribute option combos, and a partner's values taken as
    # the default's would be merged with every other partner's
    ("attributeoptioncombo", "r.aoc", "'unknown attribute option combo ' || quote_literal(r.aoc)"
     " || ': statnet keeps no attribute option combos (partners, funding): give none or default'",
     "NOT r.aoc = ANY(CAST(:default_aocs AS text[]))"),
    ("value", "r.original", "r.de || ': value ' || quote_literal(r.original) || ' is not of type ' || r.value_type",
     f"r.de_known AND r.raw <> '' AND NOT ({_VALUE_OK})"),
    # DHIS2's mark for a data-quality follow-up, kept as its export gives it
    ("followup", "r.followup", "'followup must be true or false'",
     "NOT r.followup_word IN ('', 'true', 'false')"),
]

# One pass over the chunk finds the rows with any problem (a good chunk has none), and only
# those go through the checks one by one: ten passes over a 40,000-row chunk took twice as
# long. A row any check names passes the OR of all of them, so nothing is missed.
_PROBLEMS = sa.text(f"""
WITH suspect AS MATERIALIZED (
    SELECT * FROM history_rows r WHERE {" OR ".join(f"({condition})" for *_, condition in _CHECKS)}
)
SELECT n AS line, object, value, message FROM (
    {" UNION ALL ".join(f"SELECT r.n, '{obj}' AS object, {value} AS value, {message} AS message "
                        f"FROM suspect r WHERE {condition}" for obj, value, message, condition in _CHECKS)}
    UNION ALL
    -- not a problem: a key given again (files joined, a correction appended) is taken at its
    -- last line, as DHIS2 imports a file line after line; listed after every real problem
    SELECT max(r.n), 'duplicate', NULL, NULL FROM history_rows r
           WHERE r.de_known AND r.combo IS NOT NULL GROUP BY r.de, r.combo, r.ou, r.period HAVING count(*) > 1
) problems
ORDER BY object = 'duplicate', line, object
LIMIT {MAX_PROBLEMS}
""")

# the earlier lines of a key given more than once (the last line stands)
_DEDUPE = sa.text("""
DELETE FROM history_rows r USING (
    SELECT de, combo, ou, period, max(n) AS keep FROM history_rows
    WHERE de_known AND combo IS NOT NULL GROUP BY de, combo, ou, period HAVING count(*) > 1
) d
WHERE r.de = d.de AND r.combo = d.combo AND r.ou = d.ou AND r.period = d.period AND r.n < d.keep
""")

# what a row stores: its value, or (a deletion: an empty or blank value, a line marked
# deleted) a tombstone
_VALUE = """CASE r.value_type WHEN 'TEXT' THEN NULL
                         WHEN 'BOOLEAN' THEN CASE WHEN lower(r.raw) IN ('true', '1') THEN 1 ELSE 0 END
                         ELSE r.raw::numeric END,
       CASE r.value_type WHEN 'TEXT' THEN r.original
                         WHEN 'BOOLEAN' THEN CASE WHEN lower(r.raw) IN ('true', '1') THEN 'true' ELSE 'false' END
                         ELSE trim_scale(r.raw::numeric)::text END,
       false"""
_TOMBSTONE = "NULL, NULL, true"


def _stored(deleting: bool) -> str:
    """The chunk's values (or its deletions) as stored rows, with their history seq, in
    the key's order: two loads of overlapping files, each chunk locking its keys as it
    inserts them, deadlocked when their chunks met the keys in different orders (and a
    key's index entries are then written in the index's order)."""
    return f"""
INSERT INTO aggregation.data_value AS f
    (data_element, combo, org_unit, period, period_type, start_date, end_date, path,
     value, text_value, deleted, seq, return_id, updated_at, comment, stored_by, followup)
SELECT r.de, r.combo, r.ou, r.period, r.ptype, r.start_date, r.end_date, r.path,
       {_TOMBSTONE if deleting else _VALUE},
       :seq + r.n, :batch, now(), r.comment, coalesce(r.stored_by, :loaded_by), r.followup_word = 'true'
FROM history_rows r WHERE r.raw {"=" if deleting else "<>"} ''
ORDER BY r.ou, r.period, r.de, r.combo
"""


# the usual case, years nobody has loaded yet: a plain insert
_INSERT = sa.text(_stored(deleting=False))

# history may overwrite history loaded before (seq 0: before history had an order) or
# earlier in the order; a return's value (seq > 0) never
# (equal: the same line of loads started in the same second, or chunks sent on their own
# in one second: the one committed last)
_OVER_HISTORY = """
ON CONFLICT (data_element, combo, org_unit, period) DO UPDATE
   SET value = excluded.value, text_value = excluded.text_value, deleted = excluded.deleted,
       path = excluded.path, seq = excluded.seq, return_id = excluded.return_id,
       updated_at = excluded.updated_at, comment = excluded.comment, stored_by = excluded.stored_by,
       followup = excluded.followup
   WHERE f.seq = 0 OR f.seq <= excluded.seq
RETURNING f.data_element, f.combo, f.org_unit, f.period
"""


def _met(deleting: bool) -> str:
    """The stored rows the chunk's values (or deletions) meet, as they were: a value over a
    tombstone is imported, and only a value there is deleted."""
    return f"""
old AS MATERIALIZED (
    SELECT f.data_element, f.combo, f.org_unit, f.period, f.deleted
    FROM aggregation.data_value f
    JOIN history_rows r ON f.data_element = r.de AND f.combo = r.combo AND f.org_unit = r.ou
     AND f.period = r.period AND r.raw {"=" if deleting else "<>"} ''
)"""


# (imported, updated)
_UPSERT = sa.text(f"""
WITH {_met(deleting=False)},
up AS ({_stored(deleting=False)} {_OVER_HISTORY})
SELECT count(*) FILTER (WHERE o.deleted IS NOT FALSE), count(*) FILTER (WHERE NOT o.deleted)
FROM up LEFT JOIN old o USING (data_element, combo, org_unit, period)
""")

# the chunk's deletions: tombstones, over history only; (deleted)
_TOMBSTONES = sa.text(f"""
WITH {_met(deleting=True)},
gone AS ({_stored(deleting=True)} {_OVER_HISTORY})
SELECT count(*) FROM gone JOIN old o USING (data_element, combo, org_unit, period) WHERE NOT o.deleted
""")

# a place history made reported (received_at unknown) and a later load emptied of every
# value of the data set is reported no more (a return's place stays: it was sent)
# Each of the chunk's places looked up by key, the document read once: as a join, with the
# table's statistics stale (autovacuum off, or just after a load had grown it by 70,000
# rows) the planner read the 24,000 places' document again for every completeness row, and
# a corrected file's chunk held its locks for minutes while every return waited (a probe's
# finding). ``LIMIT 1`` keeps the value check a per-place index probe, never an anti-join.
_UNREPORTED = sa.text("""
DELETE FROM aggregation.completeness c
WHERE c.ctid = ANY (ARRAY(
    SELECT x.ctid
    FROM json_to_recordset(CAST(:places AS json)) AS k(ou text, period text)
    CROSS JOIN LATERAL (
        SELECT c2.ctid FROM aggregation.completeness c2
        WHERE c2.data_set = :ds AND c2.org_unit = k.ou AND c2.period = k.period
          AND c2.received_at IS NULL AND c2.return_id LIKE 'history:%'
          AND NOT EXISTS (SELECT 1 FROM aggregation.data_value f
                          WHERE f.org_unit = k.ou AND f.period = k.period
                            AND f.data_element = ANY(CAST(:elements AS text[])) AND NOT f.deleted
                          LIMIT 1)
        OFFSET 0) x))
  -- (again here: a row a return claimed while this waited for its lock is rechecked by these,
  -- and left; a TID alone was a yes for the row's new version, and deleted the return's)
  AND c.data_set = :ds AND c.received_at IS NULL AND c.return_id LIKE 'history:%'
RETURNING c.org_unit, c.period
""")

# the chunk's unit-years, each with all the chunk's elements: a unit given only some of
# them gets the others' yearly rows recomputed too, to the same figures (a rebuild is exact
# whatever it is given)
_PENDING = sa.text("""
INSERT INTO aggregation.year_total_pending (org_unit, year, data_elements)
SELECT ou, year, CAST(:elements AS text[]) FROM json_to_recordset(CAST(:years AS json)) AS k(ou text, year int)
ON CONFLICT DO NOTHING
""")

_COMPLETENESS = sa.text("""
INSERT INTO aggregation.completeness (data_set, org_unit, period, return_id, received_at, accepted_at)
SELECT :ds, ou, period, :batch, NULL, now()
FROM json_to_recordset(CAST(:places AS json)) AS k(ou text, period text)
ON CONFLICT (data_set, org_unit, period) DO NOTHING
""")


@dataclasses.dataclass(frozen=True)
class Reported:
    """What a chunk reports: its lines, each (unit, period) given a value, and the elements
    given one.

    Taken from the lines as they are read, once the chunk is known to have no problem
    (so every line is a good one), instead of by further scans of the staged chunk in
    SQL: the completeness rows, the yearly rebuild's queue and the line count took
    55-60 ms of server CPU a 40,000-line chunk that way, 8-10 ms now (national
    benchmark's database)."""
    lines: int
    places: list[tuple[str, str]]
    elements: list[str]      # given a value or deleted
    cleared: list[tuple[str, str]] = ()  # (unit, period) with a deletion (an empty value)

    @classmethod
    def of(cls, rows: list[tuple[int, list[str]]]) -> "Reported":
        places, elements, cleared = set(), set(), set()
        for _, f in rows:
            # (period, unit) joined as one string, not a tuple: 40,000 new tuples woke
            # the garbage collector over the whole chunk, 20 ms where this takes 5. A
            # good period code never holds the separator; a unit code may hold anything
            # a value is given where not blank (as history's SQL: btrim of WHITESPACE)
            (places if f[5].strip() else cleared).add(f"{f[1]}\x1f{f[2]}")
            elements.add(f[0])

        def pairs(joined):
            return sorted((ou, pe) for pe, ou in (p.split("\x1f", 1) for p in joined))
        return cls(len(rows), pairs(places), sorted(elements), pairs(cleared))

    def years(self) -> list[dict]:
        """The unit-years of its finer-than-yearly periods, given values or deleted (a
        yearly period is its year's total already: nothing to rebuild)."""
        touched = {*self.places, *self.cleared}
        periods = {code: Period.parse(code) for code in {period for _, period in touched}}
        return [{"ou": ou, "year": year} for ou, year in
                sorted({(ou, periods[period].start.year) for ou, period in touched
                        if periods[period].type != YEARLY})]



def _rows(body: str) -> tuple[str, Reported]:
    """The chunk's data lines as clean CSV for COPY, each led by its line number in the
    chunk, and what they report.

    ``shared.dhis2_csv`` checks the header and the fields of every line (and
    says which are wrong); COPY then reads the rows without surprises.
    """
    try:
        rows = dhis2_csv.read(body)
    except dhis2_csv.CsvError as exc:
        first = exc.problems[0][1]
        raise error(400, first if len(exc.problems) == 1 else f"{len(exc.problems)} problems reading the CSV, "
                                                              f"the first: {first}",
                    conflicts=[{"object": f"line {line}", "value": None, "message": message}
                               for line, message in exc.problems[:MAX_PROBLEMS]]) from None
    out = io.StringIO()
    # CRLF line ends: Python's writer quotes a field holding any character of its line end,
    # so a comment with a lone carriage return (a Windows line break in DHIS2's export) is
    # quoted too, where after "\n" alone COPY met it bare and refused the chunk
    csv.writer(out, lineterminator="\r\n").writerows([line, *fields] for line, fields in rows)
    return out.getvalue(), Reported.of(rows)


@contextlib.contextmanager
def _blocking():
    """psycopg2 refuses COPY while psycogreen's wait callback is set. The COPY runs
    with the callback set aside; nothing else in the process runs meanwhile (the
    call blocks the hub), so no other greenlet can notice, and it is back before
    anything yields."""
    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(callback)


def _store(conn: sa.Connection, params: dict) -> tuple[int, int]:
    """Store the chunk's values: (imported, updated).

    Tried as a plain insert first, and upserted only if a value is there already (a
    year loaded again, or a return for one of its periods): ON CONFLICT's speculative
    insertion made a 40,000-value chunk cost 20-28% more on a table of five million
    values (642-845 ms against 532-610, tests/bench/RESULTS.md), and that statement is
    most of a load's time. A conflict with the first value costs nothing; one further in
    wastes the work up to it, in a case that is rare.
    """
    try:
        with conn.begin_nested():
            return conn.execute(_INSERT, params).rowcount, 0
    except sa.exc.IntegrityError as exc:
        if not isinstance(exc.orig, psycopg2.errors.UniqueViolation):
            raise
    return tuple(conn.execute(_UPSERT, params).one())


def load(conn: sa.Connection, md: Metadata, data_set: str | None, body: str, loaded_by: str | None = None,
         number: int = 0, line_offset: int | None = None) -> dict:
    """Load one chunk of DHIS2 CSV into the aggregates (in the caller's transaction); each value
    keeps its comment and its storedby, else ``loaded_by``. ``number`` (the load's: ``begin``)
    and ``line_offset`` (the file line of the chunk's header) order it
    among other chunks and loads (``history_seq``); a chunk without its line in a file has
    its lines at the top of its load's range (and its own lines are disjoint keys: a key
    given twice is taken at its last)."""
    if not data_set:
        raise error(400, "dataSet is required (?dataSet=CODE): history is loaded one data set at a time")
    ds = md.data_sets.get(data_set)
    if ds is None:
        raise error(400, f"dataSet: unknown data set {data_set!r}")
    # read off the hub, in a native thread: ~75 ms of Python for a 40,000-line chunk, during
    # which the chunk loading beside it could not send its next statement (its transaction
    # sat waiting for this process: 0.12 of a backend over a national load, sampled)
    rows_csv, reported = tpool.execute(_rows, body)
    batch = f"history:{uuid.uuid4()}"
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cur:
        cur.execute(_STAGE)
        with _blocking():
            cur.copy_expert(_COPY, io.StringIO(rows_csv))
    conn.execute(_DERIVE, {"first_year": FIRST_YEAR, "ws": WHITESPACE, "default_uid": DEFAULT_COMBO_UID})
    problems = conn.execute(_PROBLEMS, {"ds": ds.code, "elements": list(ds.data_elements),
                                        "ptype": ds.period_type, "today": today(), "first_year": FIRST_YEAR,
                                        "explicit": sorted(ds.org_units), "level": ds.org_unit_level,
                                        "ends": ds.assignment_ends_json(),
                                        "default_aocs": list(DEFAULT_ATTRIBUTE_COMBOS)}).all()
    faults = [p for p in problems if p.object != "duplicate"]
    if faults:
        raise error(400, f"{len(faults)}{'+' if len(problems) == MAX_PROBLEMS else ''} problem(s): "
                         "nothing of this chunk was loaded",
                     conflicts=[{"object": f"line {p.line}: {p.object}", "value": p.value, "message": p.message}
                               for p in faults])
    if problems:  # keys given twice, and nothing else: each at its last line
        conn.execute(_DEDUPE)
    rows = reported.lines
    last_line = body.count("\n") + 1  # (the chunk's last line number, at most)
    if line_offset is None:
        line_offset = MAX_LINE - last_line
    if line_offset + last_line > MAX_LINE:
        raise error(400, f"firstLine: a load has at most {MAX_LINE:,} lines")
    params = {"batch": batch, "loaded_by": loaded_by,
              "seq": history_seq(number, line_offset)}
    imported, updated = _store(conn, params) if reported.places else (0, 0)
    deleted = conn.execute(_TOMBSTONES, params).scalar() if reported.cleared else 0
    years = reported.years()
    if 0 < len(years) <= REBUILD_AT_ONCE:
        # a small load (a village's year, a correction): its yearly rows now, as a return's
        # are, not after the pause a bulk load is waited out for (an absent year reads as
        # "no data": six seconds of it after a twelve-line load)
        refresh_year_totals(conn, {(y["ou"], y["year"], de) for y in years for de in reported.elements})
    elif years:
        conn.execute(_PENDING, {"years": serialization.dumps(years), "elements": reported.elements})
    if reported.places:
        conn.execute(_COMPLETENESS, {"ds": ds.code, "batch": batch, "places": serialization.dumps(
            [{"ou": ou, "period": period} for ou, period in reported.places])})
    unreported = set()
    if reported.cleared or imported + updated + deleted < rows:
        # (after: a place whose value lost, to a deletion in this chunk or to a later line
        # or load stored first, reported nothing)
        unreported = {tuple(r) for r in conn.execute(_UNREPORTED, {
            "ds": ds.code, "elements": list(ds.data_elements), "places": serialization.dumps(
                [{"ou": ou, "period": period} for ou, period in {*reported.places, *reported.cleared}])})}
    return {"batch": batch, "rows": rows, "places": [p for p in reported.places if p not in unreported],
            # the places whose stored values it changed, and which report nothing now: a
            # deletion changes what validation judges later returns on, too
            "cleared": sorted({*reported.cleared, *unreported}),
            "importCount": {"imported": imported, "updated": updated, "deleted": deleted,
                            "ignored": rows - imported - updated - deleted}}
