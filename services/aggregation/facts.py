"""Applying accepted returns to the stored values, set-based.

One statement per return, whatever its size: the values go to PostgreSQL as
arrays, are upserted only where the return is newer (by submission seq) than
what is stored, and are classified against the previous state in the same
statement, which is where ``importCount`` comes from:

* imported: no value before (or a deleted one), a value now;
* updated:  a value before, a (possibly equal) value now;
* deleted:  a value before, ``""`` now;
* ignored:  ``""`` for a value that did not exist, or a value older than the stored one.

Deletions leave a tombstone so that an older return delivered late cannot
bring a deleted value back.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

import eventlet
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from services.aggregation import tables as t
from shared import serialization
from shared.background import Pump
from shared.config import Settings
from shared.db import engine_for, lock_in_order
from shared.periods import Period
from shared.replica import Metadata
from shared.returns import reported_places
from shared.values import numeric

log = logging.getLogger(__name__)

_APPLY = sa.text("""
-- each value names its place (unit and period: dates, path) and its return by number, so
-- what a hundred values share is sent and parsed once (a third of the document's bytes)
WITH incoming AS (
    SELECT v.de, v.combo, p.ou, p.period, p.ptype, p.start_date, p.end_date, p.path, v.num, v.txt, v.del,
           v.cm, coalesce(v.fu, false) AS fu, r.seq, r.return_id, coalesce(v.sb, r.sender) AS sender,
           CAST(extract(year FROM p.start_date) AS int) AS year  -- the unit-year its yearly rows are
    FROM json_to_recordset(CAST(:rows AS json))
           AS v(de text, combo text, place int, ret int, num numeric, txt text, del boolean, cm text, sb text,
                fu boolean)
    JOIN json_to_recordset(CAST(:places AS json))
           AS p(place int, ou text, period text, ptype text, start_date date, end_date date, path text)
      USING (place)
    JOIN json_to_recordset(CAST(:returns AS json)) AS r(ret int, seq bigint, return_id text, sender text)
      USING (ret)
    -- one key order for every transaction: concurrent batches touching the same values
    -- lock their rows in the same order and cannot deadlock (the primary key's order)
    ORDER BY p.ou, p.period, v.de, v.combo
),
-- MATERIALIZED: one primary-key lookup per incoming value, once. Inlined into the join
-- below, the planner re-scanned the whole incoming list for each of them (a loop in a
-- loop: 120-150 ms for a batch of 15 returns at national scale, 55-75 ms like this)
old AS MATERIALIZED (
    SELECT f.data_element, f.combo, f.org_unit, f.period, f.deleted, f.value, f.path
    FROM aggregation.data_value f
    JOIN incoming i ON f.data_element = i.de AND f.combo = i.combo AND f.org_unit = i.ou AND f.period = i.period
),
up AS (
    INSERT INTO aggregation.data_value AS f
        (data_element, combo, org_unit, period, period_type, start_date, end_date, path,
         value, text_value, deleted, seq, return_id, updated_at, comment, stored_by, followup)
    SELECT de, combo, ou, period, ptype, start_date, end_date, path,
           CASE WHEN del THEN NULL ELSE num END, CASE WHEN del THEN NULL ELSE txt END, del,
           seq, return_id, now(), cm, sender, fu
    FROM incoming
    ON CONFLICT (data_element, combo, org_unit, period) DO UPDATE
       SET value = excluded.value, text_value = excluded.text_value, deleted = excluded.deleted,
           seq = excluded.seq, return_id = excluded.return_id, path = excluded.path,
           updated_at = excluded.updated_at, comment = excluded.comment, stored_by = excluded.stored_by,
           followup = excluded.followup
       WHERE f.seq < excluded.seq
    RETURNING f.data_element, f.combo, f.org_unit, f.period
),
-- unit-years without a yearly row yet (a year's first month): summed from their values,
-- which are only what this apply brought, as cheaply as any move (``_MOVE_YEARS``)
first_rows AS MATERIALIZED (
    SELECT u.ou, u.year
    FROM (SELECT DISTINCT ou, year FROM incoming WHERE ptype <> 'Yearly') u
    WHERE NOT EXISTS (SELECT 1 FROM aggregation.year_total y WHERE y.org_unit = u.ou AND y.year = u.year)
),
-- each incoming value beside what it found and whether it was written: read once by the
-- changes and the counts below. Joined to ``old`` a second time for the changes, the
-- planner, trusting its row estimates of the CTEs, looped over all of ``old`` for each
-- value a batch replaced (1,500 x 1,500: 0.55 s for 15 corrections; new months find nothing)
joined AS MATERIALIZED (
    SELECT i.de, i.combo, i.ou, i.period, i.ptype, i.start_date, i.year, i.path, i.num, i.del, i.return_id,
           o.data_element IS NOT NULL AS had, o.deleted AS was_deleted, o.value AS old, o.path AS old_path,
           u.data_element IS NOT NULL AS written
    FROM incoming i
    LEFT JOIN old o ON o.data_element = i.de AND o.combo = i.combo AND o.org_unit = i.ou AND o.period = i.period
    LEFT JOIN up u ON u.data_element = i.de AND u.combo = i.combo AND u.org_unit = i.ou AND u.period = i.period
),
-- what each value written elsewhere changes in the yearly rows (a value written again as
-- it was, a form sent twice, changes nothing there)
changed AS (
    SELECT j.de, j.combo, j.ou, j.period, j.start_date, j.old, j.old_path,
           CASE WHEN j.del THEN NULL ELSE j.num END AS new, j.path
    FROM joined j
    WHERE j.written AND j.ptype <> 'Yearly' AND (j.old IS NOT NULL OR (NOT j.del AND j.num IS NOT NULL))
      AND (j.old IS DISTINCT FROM CASE WHEN j.del THEN NULL ELSE j.num END OR j.old_path IS DISTINCT FROM j.path)
      AND NOT EXISTS (SELECT 1 FROM first_rows f WHERE f.ou = j.ou AND f.year = j.year)
),
-- one more row of the answer: those changes, for ``_MOVE_YEARS``, and the keys to sum
changes AS (
    SELECT (SELECT CAST(json_agg(json_build_object('de', c.de, 'combo', c.combo, 'ou', c.ou, 'pe', c.period,
                                                   'start', c.start_date, 'old', c.old, 'old_path', c.old_path,
                                                   'new', c.new, 'path', c.path)) AS text)
            FROM changed c) AS moves,
           (SELECT CAST(json_agg(json_build_array(k.ou, k.year, k.de)) AS text)
            FROM (SELECT DISTINCT i.ou, f.year, i.de FROM incoming i
                  JOIN first_rows f ON f.ou = i.ou AND f.year = i.year
                  WHERE i.ptype <> 'Yearly') k) AS sums
)
SELECT
    j.return_id,
    count(*) FILTER (WHERE j.written AND NOT j.del AND (NOT j.had OR j.was_deleted)),
    count(*) FILTER (WHERE j.written AND NOT j.del AND j.had AND NOT j.was_deleted),
    count(*) FILTER (WHERE j.written AND j.del AND j.had AND NOT j.was_deleted),
    count(*), NULL, NULL
FROM joined j
GROUP BY j.return_id
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, moves, sums FROM changes
""")


NOTHING = {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0}


def apply_returns(conn: sa.Connection, returns: list[dict], md: Metadata) -> dict[str, dict]:
    """Upsert the values of validated returns, none of which sends a value another one of
    them sends (``shared.batches.disjoint_runs``), and move their yearly rows by what they
    changed; returns each one's importCount. The caller holds the unit-years' locks
    (``lock_unit_years``).

    The rows go to PostgreSQL as one JSON document: lists as SQL arrays cost psycopg2 a
    millisecond and a half of CPU per return to adapt (Decimal and date by Python code),
    JSON a tenth of that (measured). Cast to ``json``, not ``jsonb``, here and in every
    statement that reads a document of rows once: ``jsonb`` first builds the document into
    a sorted tree, ~4 ms more server CPU per 1,000 rows of a return's values (measured:
    9.5-10.5 against 5.3-6.0 ms).
    """
    # what a value's unit and period imply, worked out once per (unit, period), not per value
    places: dict[tuple[str, str], dict] = {}
    rows = []
    for ret, data in enumerate(returns):
        for v in data["values"]:
            place = places.get((v["org_unit"], v["period"]))
            if place is None:
                period = Period.parse(v["period"])
                place = places[(v["org_unit"], v["period"])] = {
                    "place": len(places), "ou": v["org_unit"], "period": period.code, "ptype": period.type,
                    "start_date": period.start.isoformat(), "end_date": period.end.isoformat(),
                    "path": md.period_path(v["org_unit"], period.start, period.end)}
            de = md.data_elements[v["data_element"]]
            num = numeric(de.value_type, v["value"])
            row = {"de": de.code, "combo": v["category_option_combo"], "place": place["place"], "ret": ret,
                   "num": None if num is None else str(num), "txt": v["value"], "del": v["value"] == ""}
            if v.get("comment"):  # most values have none: a missing key is a null, and no bytes
                row["cm"] = v["comment"]
            if v.get("stored_by"):  # the value's own storedBy, else the return's sender
                row["sb"] = v["stored_by"]
            if v.get("followup"):  # (marked: a few values in a thousand)
                row["fu"] = True
            rows.append(row)
    counts = {data["return_id"]: dict(NOTHING) for data in returns}
    if not rows:
        return counts
    params = {"rows": serialization.dumps(rows), "places": serialization.dumps(list(places.values())),
              "returns": serialization.dumps([{"ret": ret, "seq": data["seq"], "return_id": data["return_id"],
                                               "sender": data.get("submitted_by")}
                                              for ret, data in enumerate(returns)])}
    moves = sums = None
    for return_id, imported, updated, deleted, total, moves_doc, sums_doc in conn.execute(_APPLY, params):
        if return_id is None:
            moves, sums = moves_doc, sums_doc
        else:
            counts[return_id] = {"imported": imported, "updated": updated, "deleted": deleted,
                                 "ignored": total - imported - updated - deleted}
    if moves is not None:
        move_year_totals(conn, moves)
    if sums is not None:
        rebuild_year_totals(conn, sorted(tuple(k) for k in serialization.loads(sums)))
    return counts


_IMPORT_COUNT = sa.text("""
SELECT count(*) FILTER (WHERE NOT v.del AND (f.deleted IS NULL OR f.deleted)) AS imported,
       count(*) FILTER (WHERE NOT v.del AND NOT f.deleted) AS updated,
       count(*) FILTER (WHERE v.del AND (f.deleted IS NULL OR f.deleted)) AS ignored,
       count(*) FILTER (WHERE v.del AND NOT f.deleted) AS deleted
FROM json_to_recordset(CAST(:rows AS json)) AS v(de text, combo text, ou text, period text, del boolean)
LEFT JOIN aggregation.data_value f
       ON f.data_element = v.de AND f.combo = v.combo AND f.org_unit = v.ou AND f.period = v.period
""")


def import_count(conn: sa.Connection, values: list[dict]) -> dict[str, int]:
    """The importCount an accepted return with these values would get now, told as ``_APPLY``
    tells it (a dry run's: validation holds neither text values nor loaded history)."""
    if not values:
        return dict(NOTHING)
    rows = [{"de": v["data_element"], "combo": v["category_option_combo"], "ou": v["org_unit"],
             "period": v["period"], "del": v["value"] == ""} for v in values]
    return dict(conn.execute(_IMPORT_COUNT, {"rows": serialization.dumps(rows)}).one()._mapping)


# keys arrive as (unit, year, element) triples and are grouped per (unit, year), so
# each unit-year is read once, as one range of the primary key (org_unit, period, ...)
_KEYS = """
k AS (
    SELECT ou, year, array_agg(DISTINCT de) AS des
    FROM json_to_recordset(CAST(:keys AS json)) AS u(ou text, year int, de text)
    GROUP BY ou, year
)"""

_REBUILD_YEARS = sa.text(f"""
WITH {_KEYS},
-- Each unit-year worked out on its own: one primary-key read of its values, whatever the
-- table's size (the year as extract() so that the (element, start_date) index, which would
-- read every unit's rows of those elements, is no candidate: the planner's choice on a
-- small table, 40 ms a return instead of 2), and its sums over a few hundred values in
-- memory. Aggregated over the whole batch instead, the sums spilled to disk in a history
-- load's 20,000-key batches and cost a quarter more (tests/bench/RESULTS.md).
fresh AS (
    SELECT x.data_element, x.combo, k.ou AS org_unit, k.year, x.path, x.s, x.n, x.last_start, x.last_value
    FROM k CROSS JOIN LATERAL (
        WITH leaf AS (
            SELECT f.data_element, f.combo, f.path, f.period, f.start_date, f.value FROM aggregation.data_value f
            WHERE f.org_unit = k.ou AND extract(year FROM f.start_date) = k.year
              -- the same, said with the period codes (a year's all begin with it): the
              -- unit-year is one range of the primary key (org_unit, period, ...)
              AND f.period >= CAST(k.year AS text) AND f.period < CAST(k.year + 1 AS text)
              -- the elements checked on the range's rows, never a key condition: PostgreSQL
              -- scans a key range once per item of an = ANY on a later column (a rebuild
              -- read each unit-year 50 times and took twice as long)
              AND array_position(k.des, f.data_element) IS NOT NULL
              AND f.period_type <> 'Yearly' AND f.value IS NOT NULL
        ),
        per_period AS (       -- each combo's values, and each period's total over combos ('*')
            SELECT data_element, combo, path, start_date, value AS v FROM leaf
            UNION ALL
            -- by the period itself: January and the first quarter start on the same day (an
            -- element in a monthly and a quarterly data set), and are two periods, not one
            SELECT data_element, '*', path, start_date, sum(value) FROM leaf
            GROUP BY data_element, path, period, start_date
        )
        -- the last value: that of the greatest (days since 1970, value) pair, with no sort per row
        SELECT data_element, combo, path, sum(v) AS s, count(*) AS n, max(start_date) AS last_start,
               (max(ARRAY[CAST(start_date - DATE '1970-01-01' AS numeric), v]))[2] AS last_value
        FROM per_period
        GROUP BY data_element, combo, path
    ) x
),
-- the keys' yearly rows as they stand (no one else writes them: the caller holds their
-- locks, so a row not here is not there)
old AS MATERIALIZED (
    SELECT o.* FROM k CROSS JOIN LATERAL (     -- by the primary key, as leaf above
        SELECT * FROM aggregation.year_total o
        WHERE o.org_unit = k.ou AND o.year = k.year AND o.data_element = ANY(k.des) OFFSET 0) o
),
-- each row of the keys: fed by a value (in fresh), stored (in old), or both
diff AS MATERIALIZED (
    SELECT org_unit, year, data_element, combo, path, f.s, f.n, f.last_start, f.last_value,
           f.n IS NOT NULL AS fed, o.n IS NOT NULL AS existed,
           (o.s, o.n, o.last_start, o.last_value) IS DISTINCT FROM (f.s, f.n, f.last_start, f.last_value) AS changed
    FROM fresh f FULL JOIN old o USING (org_unit, year, data_element, combo, path)
),
-- rows no value feeds any more (every value deleted, or the unit moved)
gone AS (
    DELETE FROM aggregation.year_total y
    WHERE (y.org_unit, y.year, y.data_element, y.combo, y.path) IN (
        SELECT org_unit, year, data_element, combo, path FROM diff WHERE NOT fed)
),
-- rows rewritten only where the figures changed: a form sent again with one value
-- corrected (as data entry apps do) rewrites that element's rows, not the return's
changed AS (
    UPDATE aggregation.year_total y
       SET s = d.s, n = d.n, last_start = d.last_start, last_value = d.last_value
    FROM diff d
    WHERE d.fed AND d.existed AND d.changed AND y.org_unit = d.org_unit AND y.year = d.year
      AND y.data_element = d.data_element AND y.combo = d.combo AND y.path = d.path
)
-- and new rows plainly inserted (an upsert's speculative insertion cost 15-20% more), in
-- the subtree index's order: a history load's rows then lie together on disk as a
-- country-by-year question reads them (hash order spread its 8,500 rows over 5,900 pages)
INSERT INTO aggregation.year_total (data_element, combo, org_unit, year, path, s, n, last_start, last_value)
SELECT data_element, combo, org_unit, year, path, s, n, last_start, last_value FROM diff WHERE NOT existed
ORDER BY data_element, year, combo, path
""")


# The yearly rows moved by what an apply changed, instead of summed again from every
# value of their unit-years: a return for December found eleven months and read them all
# again (national benchmark database, a batch of 15 returns of 100 values: 98-113 ms
# applied and summed, 70-74 moved; a year's first month, where there is nothing else to
# read, is still summed: tests/bench/RESULTS.md). Where moving a row cannot give what summing
# its values would, its key (unit, year, element) is rebuilt as before: a value removed
# (deleted, or a whole period's total gone), a value that changed path (its unit moved), a
# counted value whose row is missing (rows a history load left for the rebuilder), and a
# latest period whose number went down (the latest value may then be another period's of
# the same start: the first quarter's beside January's).
_MOVE_YEARS = sa.text("""
WITH ch AS (      -- the apply's changed values: before and after
    SELECT de AS data_element, combo, ou AS org_unit, pe AS period, start AS start_date,
           CAST(extract(year FROM start) AS int) AS year, old AS old_v, old_path, new AS new_v, path
    FROM json_to_recordset(CAST(:changes AS json))
           AS e(de text, combo text, ou text, pe text, start date, old numeric, old_path text, new numeric, path text)
),
-- each changed period's values over combos, as stored now (one key range per unit-period)
places AS (SELECT DISTINCT org_unit, period FROM ch),
now_stored AS MATERIALIZED (
    SELECT f.org_unit, f.period, f.data_element, f.path, sum(f.value) AS s, count(f.value) AS n
    FROM places p CROSS JOIN LATERAL (
        SELECT * FROM aggregation.data_value f WHERE f.org_unit = p.org_unit AND f.period = p.period OFFSET 0) f
    GROUP BY f.org_unit, f.period, f.data_element, f.path
),
-- a period's total over combos ('*'), before and after: after as stored now, before that
-- less the changes
periods AS (
    SELECT c.org_unit, c.year, c.data_element, c.path, c.start_date,
           CASE WHEN coalesce(t.n, 0) - c.dn > 0 THEN coalesce(t.s, 0) - c.ds END AS old_v,
           CASE WHEN t.n > 0 THEN t.s END AS new_v,
           -- (values of the period stored under another path: its unit moved)
           c.moved OR coalesce(w.valued, 0) - CAST(coalesce(t.n, 0) > 0 AS int) > 0 AS moved
    FROM (SELECT org_unit, year, data_element, period, start_date, path,
                 sum(coalesce(new_v, 0) - coalesce(old_v, 0)) AS ds,
                 sum(CAST(new_v IS NOT NULL AS int) - CAST(old_v IS NOT NULL AS int)) AS dn,
                 bool_or(old_v IS NOT NULL AND old_path IS DISTINCT FROM path) AS moved
          FROM ch GROUP BY org_unit, year, data_element, period, start_date, path) c
    LEFT JOIN now_stored t
      ON t.org_unit = c.org_unit AND t.period = c.period AND t.data_element = c.data_element AND t.path = c.path
    LEFT JOIN (SELECT org_unit, period, data_element, count(*) FILTER (WHERE n > 0) AS valued
               FROM now_stored GROUP BY org_unit, period, data_element) w
      ON w.org_unit = c.org_unit AND w.period = c.period AND w.data_element = c.data_element
),
-- every change to a yearly row: a combo's value, and its period's total
moves AS (
    SELECT org_unit, year, data_element, combo, path, start_date, old_v, new_v,
           old_v IS NOT NULL AND old_path IS DISTINCT FROM path AS moved FROM ch
    UNION ALL
    SELECT org_unit, year, data_element, '*', path, start_date, old_v, new_v, moved FROM periods
    WHERE old_v IS DISTINCT FROM new_v
),
-- the unit-years' rows as they stand (one key range each; no one else writes them: the
-- caller holds their locks)
stored AS MATERIALIZED (
    SELECT y.* FROM (SELECT DISTINCT org_unit, year FROM ch) k CROSS JOIN LATERAL (
        SELECT y.ctid AS tid, y.org_unit, y.year, y.data_element, y.combo, y.path,
               ARRAY[CAST(y.last_start - DATE '1970-01-01' AS numeric), y.last_value] AS latest
        FROM aggregation.year_total y WHERE y.org_unit = k.org_unit AND y.year = k.year OFFSET 0) y
),
rows AS MATERIALIZED (
    SELECT m.*, y.tid, greatest(m.latest, y.latest) AS now_latest
    FROM (SELECT org_unit, year, data_element, combo, path,
                 sum(coalesce(new_v, 0) - coalesce(old_v, 0)) AS ds,
                 sum(CAST(new_v IS NOT NULL AS int) - CAST(old_v IS NOT NULL AS int)) AS dn,
                 max(ARRAY[CAST(start_date - DATE '1970-01-01' AS numeric), new_v]) FILTER (WHERE new_v IS NOT NULL)
                     AS latest,
                 bool_or(old_v IS NOT NULL) AS counted,                                 -- fed the row before
                 bool_or(old_v IS NOT NULL AND (new_v IS NULL OR moved)) AS removed,    -- and left it
                 max(CAST(start_date - DATE '1970-01-01' AS numeric)) FILTER (WHERE new_v < old_v) AS lowered
          FROM moves GROUP BY org_unit, year, data_element, combo, path) m
    LEFT JOIN stored y USING (org_unit, year, data_element, combo, path)
),
rebuilt AS (
    SELECT DISTINCT org_unit, year, data_element FROM rows
    WHERE removed OR (counted AND tid IS NULL) OR lowered >= now_latest[1]
),
changed AS (
    UPDATE aggregation.year_total y
       SET s = y.s + r.ds, n = y.n + r.dn,
           last_start = DATE '1970-01-01' + CAST(r.now_latest[1] AS int), last_value = r.now_latest[2]
      FROM rows r
     WHERE y.ctid = r.tid
),
added AS (
    INSERT INTO aggregation.year_total (data_element, combo, org_unit, year, path, s, n, last_start, last_value)
    SELECT data_element, combo, org_unit, year, path, ds, dn, DATE '1970-01-01' + CAST(latest[1] AS int), latest[2]
    FROM rows WHERE tid IS NULL AND NOT counted
    ORDER BY data_element, year, combo, path
)
SELECT org_unit, year, data_element FROM rebuilt
""")


def move_year_totals(conn: sa.Connection, changes: str) -> None:
    """Move the yearly rows by an apply's changes (its JSON document), and rebuild the keys
    where that can't be done (the caller holds the unit-years' locks). (A key rebuilt here
    after its rows were moved is summed from its values all the same.)"""
    keys = [tuple(k) for k in conn.execute(_MOVE_YEARS, {"changes": changes})]
    if keys:
        rebuild_year_totals(conn, sorted(keys))


# Locks on yearly totals (transaction-scoped advisory locks):
# - a return holds the namespace lock shared and one lock per (unit, year) it touches;
# - a history load holds the namespace lock exclusively (one lock, however many keys).
_YEAR_TOTALS = 4243
_UNIT_YEAR = 4242
_SHARED = sa.text(f"SELECT pg_advisory_xact_lock_shared({_YEAR_TOTALS}, 0)")
_EXCLUSIVE = sa.text(f"SELECT pg_advisory_xact_lock({_YEAR_TOTALS}, 0)")


def lock_unit_years(conn: sa.Connection, returns: list[dict]) -> None:
    """Before a batch's values are applied: a lock on every unit-year the returns' values are
    in (yearly periods too), the ones ``refresh_year_totals`` takes. Two returns of one
    village and year (January's and February's) may be aggregated at once; the second
    batch then reads the stored values and yearly rows only once the first has committed:
    its yearly rows move from the first's (a year moved from rows read before the other
    committed would lose the other's month), and its importCount tells what the first
    stored (reading before, both told the same new values as "imported" after a restart
    with a backlog, and statnet_data_values_total counted them twice)."""
    years: dict[str, int] = {}
    for data in returns:
        for v in data["values"]:
            if v["period"] not in years:
                years[v["period"]] = Period.parse(v["period"]).start.year
    _lock_unit_years(conn, {(v["org_unit"], years[v["period"]]) for data in returns for v in data["values"]})


def _lock_unit_years(conn: sa.Connection, unit_years: set[tuple[str, int]]) -> None:
    """The namespace lock shared, then one lock per (unit, year), in one order."""
    if unit_years:
        conn.execute(_SHARED)
        lock_in_order(conn, _UNIT_YEAR, (f"{ou}:{year}" for ou, year in unit_years))


def refresh_year_totals(conn: sa.Connection, keys: set[tuple[str, int, str]]) -> None:
    """Recompute the yearly rows of (org unit, year, data element) keys from the stored
    values, after the unit-years' locks (as ``lock_unit_years``: one global order, no
    deadlock; the statements that follow see every value committed before they were
    granted)."""
    if not keys:
        return
    _lock_unit_years(conn, {(ou, year) for ou, year, _ in keys})
    rebuild_year_totals(conn, sorted(keys))


def lock_all_year_totals(conn: sa.Connection) -> None:
    """For a bulk change (a rebuild, a move's re-path): wait for returns being aggregated
    and history chunks being taken in, and hold off new ones."""
    conn.execute(_EXCLUSIVE)


def hold_off_moves(conn: sa.Connection) -> None:
    """For a history chunk, whose values take their paths from the replica: the namespace
    lock shared, so that a move's re-path waits for it, or it for the move."""
    conn.execute(_SHARED)


def rebuild_year_totals(conn: sa.Connection, keys: list[tuple[str, int, str]]) -> None:
    """Rebuild the yearly rows of (org unit, year, data element) keys (the caller holds the locks)."""
    # one JSON document rather than three SQL arrays: far cheaper to send (see apply_returns)
    conn.execute(_REBUILD_YEARS, {"keys": serialization.dumps(
        [{"ou": ou, "year": year, "de": de} for ou, year, de in keys])})


_TAKE_PENDING = sa.text("""
DELETE FROM aggregation.year_total_pending
WHERE (org_unit, year, data_elements) IN (
    SELECT org_unit, year, data_elements FROM aggregation.year_total_pending
    ORDER BY org_unit, year LIMIT :n FOR UPDATE SKIP LOCKED)
RETURNING org_unit, year, data_elements
""")


_ANY_PENDING = sa.text("SELECT 1 FROM aggregation.year_total_pending LIMIT 1")


def any_pending_year_totals(conn: sa.Connection) -> bool:
    """Whether a history load left yearly rows for the rebuilder (none, but during and just
    after a load)."""
    return conn.execute(_ANY_PENDING).first() is not None
_ANALYZE_VALUES = sa.text("ANALYZE aggregation.data_value, aggregation.completeness")
_VACUUM_YEARS = sa.text("VACUUM (ANALYZE) aggregation.year_total")
_VACUUM_PENDING = sa.text("VACUUM aggregation.year_total_pending")


class YearTotalsRebuilder(Pump):
    """Rebuilds the yearly rows a history load left pending, a large batch at a time,
    once the load has paused.

    A load sends a month of the country at a time, and every month touches the same
    (unit, year, element) keys again: rebuilding as the chunks came rebuilt each
    unit-year about five times in a national load (pg_stat_statements). So keys wait
    until this process has taken no chunk for ``settle_seconds``, or until the loader
    says it is done (``POST /api/history/done``, heard by one instance). Another instance
    learns of its own chunks only; the history CLI's chunks reach every instance, and
    a rebuild started early is only extra work, never a wrong total.
    """

    name = "year-totals"
    batch = 400  # unit-years a batch: with a data set of 50 elements, 20,000 (unit, year, element) keys
    poll_seconds = 2.0
    settle_seconds = 5.0

    def __init__(self):
        super().__init__()
        self.last_chunk = float("-inf")
        # yearly totals rebuilt since the tables' statistics were last refreshed: the load is
        # not over for the planner (nor for a country-by-year question, until the yearly rows
        # are vacuumed)
        self.statistics_due = False

    def setup(self):
        self.engine = engine_for(Settings.of(self.container).database_url)

    def chunk_loaded(self) -> None:
        self.last_chunk = time.monotonic()
        self.wake()

    def load_finished(self) -> None:
        """The loader says no chunk follows: rebuild at once, not after ``settle_seconds``
        of quiet (5-7 s of a national load's 141, spent waiting). A chunk that comes after
        all the same (another load) starts the wait again; rebuilding early is only extra
        work, never a wrong total."""
        self.last_chunk = float("-inf")
        self.wake()

    def work(self) -> int:
        if time.monotonic() - self.last_chunk < self.settle_seconds:
            return 0
        with self.engine.connect() as conn:
            # nothing pending (the usual case): don't take the exclusive lock at all. Asking
            # for it queues every return's shared lock behind it until the returns already
            # holding one commit, a stall of ~100 ms every poll under load (national bench)
            pending = any_pending_year_totals(conn)
        if not pending:
            # (outside the probe's transaction: its lock on the queue made VACUUM wait five
            # seconds to truncate the emptied table, and then give up)
            if self.statistics_due:
                self.refresh_statistics()
                self.statistics_due = False  # only once done: a failure is tried again next poll
            return 0
        with self.engine.begin() as conn:
            lock_all_year_totals(conn)
            keys = sorted({(ou, year, de) for ou, year, elements in conn.execute(_TAKE_PENDING, {"n": self.batch})
                           for de in elements})
            if keys:
                self.rebuild_side_by_side(conn, keys)
                # before the commit: once the keys are gone from the queue, a client asking
                # whether the load is over must already hear that statistics are due
                self.statistics_due = True
        if keys:
            log.info("rebuilt %d pending yearly totals", len(keys))
        return len(keys)

    def rebuild_side_by_side(self, conn: sa.Connection, keys: list[tuple[str, int, str]]) -> None:
        """Rebuild a batch's keys as two statements at once, this transaction's and a
        helper's on a second connection: each statement is one core's work, and after a
        load nothing else is running (the national benchmark's rebuild was a serial tail
        of a minute). The halves share no unit-year. The helper takes no lock of its own:
        this transaction's exclusive lock keeps every return out until both are done. If
        the helper fails, so does this transaction, and the keys it took stay pending; if
        this one fails after the helper committed, the helper's half is rebuilt again,
        which changes nothing (a rebuild recomputes)."""
        cut = len(keys) // 2
        while 0 < cut < len(keys) and keys[cut][:2] == keys[cut - 1][:2]:
            cut += 1
        mine, helpers = keys[:cut], keys[cut:]
        helper = eventlet.spawn(self._rebuild_alone, helpers) if helpers else None
        try:
            if mine:
                rebuild_year_totals(conn, mine)
        finally:
            if helper is not None:
                helper.wait()  # always waited for: this transaction's lock covers its work

    def _rebuild_alone(self, keys: list[tuple[str, int, str]]) -> None:
        with self.engine.begin() as conn:
            rebuild_year_totals(conn, keys)

    def refresh_statistics(self) -> None:
        """A load has been taken in: millions of rows the planner has not seen, and a
        pending queue of deleted keys that every poll would scan through. What autovacuum
        would do some time later (and never, where it is switched off, as on the
        benchmark's server, where polling the emptied queue took 34 ms), done now: the
        queue vacuumed, the yearly rows vacuumed and analysed too (the planner's statistics
        for the subtree index, and the new rows' hint bits set here once rather than by the
        first questions to read them), a sample of the stored values and of completeness
        (a load adds a row a place) analysed; a second or
        two at national scale. (The stored values themselves are left to autovacuum: 3.5 s
        there, for less.)"""
        started = time.perf_counter()
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM runs outside a transaction
            conn.execute(_VACUUM_PENDING)
            conn.execute(_VACUUM_YEARS)
            conn.execute(_ANALYZE_VALUES)
        log.info("statistics of stored values refreshed after a load in %.1f s", time.perf_counter() - started)


def pending_year_totals(conn: sa.Connection) -> int:
    """(unit, year, element) keys waiting for their yearly rows (an element two chunks
    queued for one unit-year in different sets counts twice until rebuilt)."""
    return conn.execute(sa.text(
        "SELECT coalesce(sum(cardinality(data_elements)), 0) FROM aggregation.year_total_pending")).scalar()


def register_completeness(conn: sa.Connection, accepted: list[tuple[dict, dt.datetime]], md: Metadata) -> None:
    """The first accepted return of a data set, unit and period counts for completeness:
    every place the return reports for (``shared.returns``), not only its header's.

    ``accepted``: (return, accepted at) pairs; of several for one data set, unit and
    period, the one received first.
    """
    first: dict[tuple, dict] = {}
    for data, accepted_at in accepted:
        for org_unit, period in reported_places(data):
            key = (data["data_set"], org_unit, period)
            if key not in first or data["received_at"] < first[key]["received_at"]:
                first[key] = {"data_set": data["data_set"], "org_unit": org_unit, "period": period,
                              "return_id": data["return_id"], "received_at": data["received_at"],
                              "accepted_at": accepted_at}
    if not first:
        return
    c = t.completeness
    stmt = insert(c).values(list(first.values()))
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[c.c.data_set, c.c.org_unit, c.c.period],
        set_={k: stmt.excluded[k] for k in ("return_id", "received_at", "accepted_at")},
        # a history load's place (received_at unknown: null) gives way to a return: it was
        # counted never on time, whichever came first (null > anything is never true)
        where=c.c.received_at.is_(None) | (c.c.received_at > stmt.excluded.received_at)))


_REPATH = sa.text("""
UPDATE aggregation.data_value f SET path = m.path
FROM unnest(CAST(:code AS text[]), CAST(:path AS text[]), CAST(:valid_from AS date[]), CAST(:valid_to AS date[]))
     AS m(code, path, valid_from, valid_to)
WHERE f.org_unit = m.code AND f.start_date >= m.valid_from
  AND (m.valid_to IS NULL OR f.start_date < m.valid_to) AND f.path <> m.path
""")


_MOVED_KEYS = sa.text("""
SELECT DISTINCT org_unit, CAST(extract(year FROM start_date) AS int), data_element
FROM aggregation.data_value WHERE org_unit = ANY(CAST(:units AS text[])) AND period_type <> 'Yearly'
""")


def repath(conn: sa.Connection, org_units: list[dict]) -> int:
    """After a move, give every stored value of the moved units the path of its period,
    and rebuild their yearly rows (which are keyed by path)."""
    spans = [(u["code"], p["path"], p["valid_from"], p.get("valid_to")) for u in org_units for p in u["paths"]]
    if not spans:
        return 0
    code, path, valid_from, valid_to = (list(x) for x in zip(*spans, strict=True))
    moved = conn.execute(_REPATH, {"code": code, "path": path, "valid_from": valid_from,
                                   "valid_to": valid_to}).rowcount
    if moved:
        keys = {tuple(r) for r in conn.execute(_MOVED_KEYS, {"units": sorted(set(code))})}
        refresh_year_totals(conn, keys)
    return moved


_STORED = sa.text("""
SELECT a.de, a.combo FROM json_to_recordset(CAST(:asked AS json)) AS a(de text, combo text)
WHERE EXISTS (SELECT 1 FROM aggregation.data_value f
              WHERE f.data_element = a.de AND f.combo = a.combo AND NOT f.deleted)
""")


def stored_combos(conn: sa.Connection, asked: dict[str, list[str]]) -> dict[str, list[str]]:
    """Of the asked category option combos of each data element, those with a stored value
    (a metadata change that would strand them is refused: ``registry.importer``)."""
    pairs = [{"de": de, "combo": combo} for de, combos in asked.items() for combo in combos]
    out: dict[str, list[str]] = {}
    for de, combo in conn.execute(_STORED, {"asked": serialization.dumps(pairs)}):
        out.setdefault(de, []).append(combo)
    return out


_WITH_RETURNS = sa.text("""
SELECT a.code FROM unnest(CAST(:asked AS text[])) AS a(code)
WHERE EXISTS (SELECT 1 FROM aggregation.completeness c WHERE c.data_set = a.code)
""")


def data_sets_with_returns(conn: sa.Connection, asked: list[str]) -> list[str]:
    """Of the asked data sets, those with a return (or a history load) registered."""
    return list(conn.execute(_WITH_RETURNS, {"asked": list(asked)}).scalars())


_LOADED_AT_PLACES = """
    FROM json_to_recordset(CAST(:places AS json)) AS p(org_unit text, period text)
    CROSS JOIN LATERAL (
        SELECT * FROM aggregation.data_value d
        WHERE d.org_unit = p.org_unit AND d.period = p.period AND d.seq <= 0
          AND (d.deleted OR d.value IS NOT NULL)) v"""

def _places_param(places: list[list[str]]) -> dict:
    """``_LOADED_AT_PLACES``'s :places for (unit, period) pairs."""
    return {"places": serialization.dumps([{"org_unit": ou, "period": pe} for ou, pe in places])}


# a row per value (``history_of_places``: validation before its 0007)
_HISTORY_OF_PLACES = sa.text(f"""
SELECT count(*), coalesce(json_agg(json_build_object(
           'org_unit', v.org_unit, 'period', v.period, 'period_type', v.period_type,
           'data_element', v.data_element, 'combo', v.combo,
           'value', CASE WHEN v.deleted THEN NULL ELSE v.value END, 'seq', v.seq)), '[]')::text
{_LOADED_AT_PLACES}
""")


def history_of_places(conn: sa.Connection, places: list[list[str]]) -> tuple[int, str]:
    """``history_series``'s values a row each (see the RPC)."""
    n, doc = conn.execute(_HISTORY_OF_PLACES, _places_param(places)).one()
    return n, doc  # (a Row is no RPC answer: every such call was dead-lettered)


_HISTORY_SERIES = sa.text(f"""
SELECT coalesce(sum(s.n), 0), coalesce(json_agg(json_build_object(
           'org_unit', s.org_unit, 'data_element', s.data_element, 'combo', s.combo,
           'period_type', s.period_type, 'periods', s.periods, 'figures', s.figures, 'seqs', s.seqs)), '[]')::text
FROM (
    SELECT v.org_unit, v.data_element, v.combo, v.period_type, count(*) AS n,
           array_agg(v.period ORDER BY v.period) AS periods,
           array_agg(CASE WHEN v.deleted THEN NULL ELSE v.value END ORDER BY v.period) AS figures,
           array_agg(v.seq ORDER BY v.period) AS seqs
    {_LOADED_AT_PLACES}
    GROUP BY v.org_unit, v.data_element, v.combo, v.period_type) s
""")


def history_series(conn: sa.Connection, places: list[list[str]]) -> tuple[int, str]:
    """What history loads left at these (unit, period) places, as validation keeps them: a
    series (unit, element, combo, period type) a row, its places' periods in order beside
    each number (seq <= 0: a load's) or deletion (null) and its seq; text is not a number.
    (How many values, and a JSON document of them built by PostgreSQL: a village's year is
    a thousand values, passed on as text rather than made objects on both sides.)"""
    n, doc = conn.execute(_HISTORY_SERIES, _places_param(places)).one()
    return int(n), doc
