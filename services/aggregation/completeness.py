"""``GET /api/completeness``: expected, actual and on-time returns over a subtree.

Computed from facts, not from a "complete" button (DHIS2's weak spot):

* expected: units in the subtree of ``ou`` as of each period, assigned the data
  set (explicitly, or by their level as of that period; a unit taken out of the
  list, for the periods begun before it was where it reported) and open during it;
* actual: those of them with an accepted return (the first accepted return
  of each data set, unit and period is registered as it is aggregated);
* on time: accepted returns received within ``timelyDays`` after the period's
  end (judged at receipt, on the date in Asia/Vientiane).

A period coarser than the data set's counts unit-periods (three months of a
monthly return in a quarter). One statement answers the unit and every unit under it,
as a tree: each child has the same shape, its own children included.
"""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from services.aggregation.analytics import anchor_day
from shared.api import error
from shared.periods import LOCAL_TZ, MONTHS_LONG, Period, PeriodError, fits, periods_named
from shared.replica import Metadata, assigned_sql, taken_out_sql

_COUNTS = sa.text("""
WITH periods AS (
    SELECT * FROM unnest(CAST(:pcode AS text[]), CAST(:pstart AS date[]), CAST(:pend AS date[]))
           AS p(period, start_date, end_date)
),
ou_paths AS (SELECT unnest(CAST(:ou_paths AS text[])) AS path),
expected AS (
    SELECT per.period, per.end_date, p.code,
           -- the units between the one asked and this one, this one included ('0301/030101')
           string_to_array(rtrim(substr(p.path, length(o.path) + 1), '/'), '/') AS below
    FROM periods per
    JOIN aggregation.md_org_unit u
      ON u.opening_date <= per.end_date AND (u.closed_date IS NULL OR u.closed_date >= per.start_date)
    -- where the unit sat when the period began for it: at the period's start, or at its
    -- opening if it opened during the period (it has no place before; it is expected all
    -- the same, as intake accepts its return)
    JOIN aggregation.md_org_unit_path p
      ON p.code = u.code AND p.valid_from <= greatest(per.start_date, u.opening_date)
     AND (p.valid_to IS NULL OR p.valid_to > greatest(per.start_date, u.opening_date))
    JOIN ou_paths o ON starts_with(p.path, o.path)
    WHERE """ + assigned_sql("p.code", "p.level", "CAST(:explicit AS text[])", "CAST(:level AS int)") + """
       -- taken out of the list since: expected where it reported (its return stays counted,
       -- and the rate with it), not where it did not (added by mistake and taken out, it
       -- was expected, and late, for every period before)
       OR (""" + taken_out_sql("p.code", "greatest(per.start_date, u.opening_date)", "CAST(:ends AS jsonb)") + """
           AND EXISTS (SELECT 1 FROM aggregation.completeness c
                       WHERE c.data_set = :ds AND c.org_unit = p.code AND c.period = per.period))
)
SELECT n.node, count(*) AS expected, count(c.org_unit) AS actual,
       -- on time by the data set's timelyDays as it is now (DHIS2's timeliness, too); a
       -- place history brought has no receipt date, and is never on time
       count(*) FILTER (WHERE CAST(c.received_at AT TIME ZONE CAST(:tz AS text) AS date)
                              <= e.end_date + CAST(:timely_days AS int)) AS on_time
FROM expected e
LEFT JOIN aggregation.completeness c
       ON c.data_set = :ds AND c.org_unit = e.code AND c.period = e.period
-- counted at the unit asked ('') and at each unit on the way down to it, each named by
-- its path below the one asked (a unit moved during the periods is under both parents)
CROSS JOIN LATERAL (
    SELECT array_to_string(e.below[1:d], '/') AS node
    FROM generate_series(0, least(cardinality(e.below), CAST(:depth AS int))) AS d) n
GROUP BY n.node
""")



def native_periods(ptype: str, within: Period) -> list[Period]:
    """The data set's own periods inside the asked one."""
    out, p = [], Period.containing(ptype, within.start)
    while p.start <= within.end:
        out.append(p)
        p = p.next()
    return out


def _rate(part: int, whole: int) -> float | None:
    """A percentage to two decimals, a half rounded up as people (and DHIS2) do: 26 of 64 is
    40.63, where round() on the float halved to even (40.62)."""
    if not whole:
        return None
    return float((Decimal(100 * part) / Decimal(whole)).quantize(Decimal("0.01"), ROUND_HALF_UP))


def _entry(ds: str, ou: str, pe: str, expected: int, actual: int, on_time: int) -> dict:
    return {"dataSet": ds, "orgUnit": ou, "period": pe, "expected": expected, "actual": actual,
            "onTime": on_time, "rate": _rate(actual, expected), "onTimeRate": _rate(on_time, expected)}


def completeness(conn: sa.Connection, md: Metadata, params: dict, depth: int = 100) -> tuple[str, dict]:
    """(the org unit asked, the answer, its children ``depth`` levels down); raises
    ApiError(400) naming every bad parameter."""
    ds_code, ou, pe_code = params.get("ds"), params.get("ou"), params.get("pe")
    problems = [f"{name} is required (e.g. ds=VILLAGE_Y&ou=03&pe=2026)"
                for name, value in (("ds", ds_code), ("ou", ou), ("pe", pe_code)) if not value]
    ds = md.data_sets.get(ds_code) if ds_code else None
    if ds_code and ds is None:
        problems.append(f"ds: unknown data set {ds_code!r}")
    if ou and ou not in md.org_units:
        problems.append(f"ou: unknown org unit {ou!r}")
    pe = None
    if pe_code:
        try:
            named = periods_named(pe_code, anchor_day(params))
        except PeriodError as exc:
            problems.append(f"pe: {exc}")
        else:
            if len(named) != 1:
                problems.append(f"pe: {pe_code} names {len(named)} periods; completeness is of one "
                                "(e.g. LAST_MONTH, LAST_QUARTER, THIS_YEAR)")
            else:
                pe = named[0]
    if pe is not None and ds is not None and not fits(ds.period_type, pe.type):
        problems.append(f"pe: {pe.code} is {pe.type}, finer than data set {ds.code!r} ({ds.period_type})"
                        if MONTHS_LONG[pe.type] < MONTHS_LONG[ds.period_type] else
                        f"pe: {pe.code} is {pe.type}: data set {ds.code!r}'s {ds.period_type} periods do not "
                        "fit in it")
    if problems:  # every one at once, as analytics and dataValueSets tell them
        raise error(400, "; ".join(problems))
    periods = native_periods(ds.period_type, pe)
    rows = conn.execute(_COUNTS, {
        "pcode": [p.code for p in periods], "pstart": [p.start for p in periods],
        "pend": [p.end for p in periods], "ou_paths": sorted({p.path for p in md.org_units[ou].paths}),
        "explicit": sorted(ds.org_units), "level": ds.org_unit_level, "ds": ds.code,
        "ends": ds.assignment_ends_json(),
        "timely_days": ds.timely_days, "tz": LOCAL_TZ.key, "depth": depth}).all()
    # every unit with its children, the same shape all the way down (a child's empty
    # "children" read as "no units under it" when they were only not listed)
    nodes = {r.node: {**_entry(ds.code, r.node.rpartition("/")[2] or ou, pe.code, r.expected, r.actual,
                               r.on_time), "children": []} for r in rows}
    for node in sorted(nodes):
        if node:
            nodes[node.rpartition("/")[0]]["children"].append(nodes[node])
    body = nodes.get("") or {**_entry(ds.code, ou, pe.code, 0, 0, 0), "children": []}
    return ou, body



def reporting_period(ptype: str, day) -> Period:
    """The period being reported now: the latest one that has ended by ``day``."""
    return Period.containing(ptype, day).previous()


PASSED, AHEAD = "passed", "ahead"


def gauge_periods(ptype: str, timely_days: int, day, start: dt.date | None = None) -> list[tuple[Period, str]]:
    """The periods the operators' gauge follows for a data set: the one being reported, and,
    while its returns may still come in on time (``day`` not past end + ``timelyDays``), the
    latest one whose deadline has passed. Only the latter is judged: read from the first
    of the month, the month just ended was a few percent complete, and the completeness
    alert fired every month before its returns were due. None that ended before the
    reporting ``start`` (go-live, STATNET_REPORTING_START): those went on paper, and the
    alert fired at 0 % for the month before go-live (the deadline check starts there too)."""
    pe = reporting_period(ptype, day)
    out = []
    while pe.end + dt.timedelta(days=timely_days) >= day:
        if not out:
            out.append((pe, AHEAD))
        pe = pe.previous()
    return [(p, deadline) for p, deadline in out + [(pe, PASSED)] if start is None or p.end >= start]


def current_rates(conn: sa.Connection, md: Metadata, day,
                  start: dt.date | None = None) -> list[tuple[str, str, str, str, float, float]]:
    """(data set, root unit, period, deadline ``passed`` or ``ahead``, rate, on-time rate) for
    each data set's gauge periods (from the reporting ``start``), rates as fractions, for the
    operators' gauge. A few queries: one per data set, period and root."""
    roots = sorted(code for code, u in md.org_units.items() if u.current and u.current.level == 1)
    out = []
    for ds in sorted(md.data_sets.values(), key=lambda d: d.code):
        for pe, deadline in gauge_periods(ds.period_type, ds.timely_days, day, start):
            for root in roots:
                _, body = completeness(conn, md, {"ds": ds.code, "ou": root, "pe": pe.code}, depth=0)
                if body["expected"]:
                    out.append((ds.code, root, pe.code, deadline, body["rate"] / 100, body["onTimeRate"] / 100))
    return out
