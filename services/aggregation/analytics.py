"""``GET /api/analytics``: totals over any subtree and any coarser period.

One SQL statement answers a whole query. For a data element total (``#{DE}``),
values are first summed over combos per (unit, period), then aggregated by the
element's ``aggregationType``, except where the type works per unit (LAST,
AVERAGE_SUM_ORG_UNIT): there each combo is worked out on its own and the total is
their sum, as DHIS2 does, so that a total always equals the sum of its combos:

* SUM: sum over units and periods;
* AVERAGE: mean of the (unit, period) values; of a BOOLEAN element, as a percentage
  (the share of yes, as DHIS2 shows an averaged yes/no);
* AVERAGE_SUM_ORG_UNIT: per unit, the mean over its periods; then the sum over units
  (stocks such as population or staff: a yearly figure is not twelve months added up);
* LAST: per unit, the value of its latest period in the range; then the sum over units;
* NONE: not aggregated: only the unit's own value for its own period.

The subtree of ``ou`` is taken *as of each value's period*: the ``path`` of a
stored value is its unit's ancestry when the period began, so the value is in
``ou``'s subtree exactly when its path starts with one of ``ou``'s paths. A
village moved to another district counts in its old district for earlier
periods and in the new one afterwards.

Where the numbers come from: a period asked at the data's own type reads the
stored values; a quarter of monthly data reads its three months; a year of
monthly or quarterly data reads ``year_total`` (one row per unit, kept exact
at every return), so a country-by-year total touches one row per village; a
unit-year a history load left pending for the rebuilder is summed from its
values instead, as the rebuild will sum it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Context, Decimal

import sqlalchemy as sa

from services.aggregation.facts import any_pending_year_totals
from shared.api import error, flag
from shared.periods import Period, PeriodError, parse_day, periods_named, today
from shared.replica import Metadata

# the types worked out per unit (and per combo) before they are summed
BY_UNIT = ("LAST", "AVERAGE_SUM_ORG_UNIT")

_TOTALS_SQL = """
WITH tg AS (      -- one row per (ou path, asked period); tid names the (ou, pe) pair
    SELECT * FROM unnest(CAST(:tid AS int[]), CAST(:lo AS text[]), CAST(:hi AS text[]),
                         CAST(:ptype AS text[]), CAST(:pstart AS date[]), CAST(:pend AS date[]),
                         CAST(:several AS boolean[]))
           AS tg(tid, lo, hi, ptype, pstart, pend, several)
),
dx AS (
    SELECT * FROM unnest(CAST(:did AS int[]), CAST(:de AS text[]), CAST(:combo AS text[]),
                         CAST(:atype AS text[]))
           AS dx(did, de, combo, atype)
),
-- (a LAST or AVERAGE_SUM_ORG_UNIT total comes as one dx row per combo of the element, each
-- worked out on its own and summed at the end, as DHIS2 does: the total of a unit that
-- sent M and F in January and only M in March is March's M and January's F, not March's
-- M alone)
-- the unit's values for periods of exactly the asked type (a month asked as a month)
-- units that have held more than one path (moved, or under an ancestor that moved): a year
-- of theirs may have a row per path
moved AS (SELECT unnest(CAST(:moved AS text[])) AS code),
-- (asked year, element) pairs with values of the year itself: a unit's year is then the
-- year's own row beside its months' and quarters' summary
yearly_native AS (
    SELECT tg.tid, dx.did FROM tg CROSS JOIN dx
    WHERE tg.ptype = 'Yearly' AND EXISTS (
        SELECT 1 FROM aggregation.data_value f
        WHERE f.data_element = dx.de AND f.start_date = tg.pstart AND f.period_type = 'Yearly'
          AND f.path >= tg.lo AND f.path < tg.hi)
),
native AS (
    SELECT tg.tid, dx.did, dx.atype, dx.combo, f.org_unit, sum(f.value) AS s, 1 AS n, f.start_date AS last_start,
           sum(f.value) AS last_v,
           tg.several OR tg.ptype <> 'Monthly' OR f.org_unit IN (SELECT code FROM moved) AS repeats
    FROM tg CROSS JOIN dx
    JOIN aggregation.data_value f
      ON f.data_element = dx.de AND f.start_date = tg.pstart AND f.period_type = tg.ptype
     AND f.path >= tg.lo AND f.path < tg.hi
    WHERE (dx.combo IS NULL OR f.combo = dx.combo) AND f.value IS NOT NULL
    GROUP BY tg.tid, tg.ptype, tg.several, dx.did, dx.atype, dx.combo, f.org_unit, f.start_date
),
-- months (and quarters) inside an asked period that is neither a month nor a calendar year,
-- one number per unit and period: a quarter's months; a six-month's months and quarters; a
-- financial year's (shared.periods: the output types; no data set reports by them)
months AS (
    SELECT tg.tid, dx.did, dx.atype, dx.combo, f.org_unit, sum(f.value) AS s, 1 AS n, f.start_date AS last_start,
           sum(f.value) AS last_v, true AS repeats
    FROM tg CROSS JOIN dx
    JOIN aggregation.data_value f
      ON f.data_element = dx.de AND f.start_date >= tg.pstart AND f.start_date <= tg.pend
     AND f.period_type IN ('Monthly', 'Quarterly') AND f.period_type <> tg.ptype
     AND f.path >= tg.lo AND f.path < tg.hi
    WHERE tg.ptype NOT IN ('Monthly', 'Yearly') AND f.end_date <= tg.pend
      AND (dx.combo IS NULL OR f.combo = dx.combo) AND f.value IS NOT NULL
    GROUP BY tg.tid, dx.did, dx.atype, dx.combo, f.org_unit, f.period_type, f.start_date
),
{pending}-- months and quarters inside an asked year, already summarised per unit
years AS (
    SELECT tg.tid, dx.did, dx.atype, dx.combo, y.org_unit, y.s, y.n, y.last_start, y.last_value AS last_v,
           tg.several OR y.org_unit IN (SELECT code FROM moved)
           OR EXISTS (SELECT 1 FROM yearly_native n WHERE n.tid = tg.tid AND n.did = dx.did) AS repeats
    FROM tg CROSS JOIN dx
    JOIN aggregation.year_total y
      ON y.data_element = dx.de AND y.year = CAST(extract(year FROM tg.pstart) AS int)
     AND y.combo = coalesce(dx.combo, '*') AND y.path >= tg.lo AND y.path < tg.hi
    WHERE tg.ptype = 'Yearly'{not_pending}
),
{years_live}-- a country has thousands of units. Only LAST and AVERAGE_SUM_ORG_UNIT need each unit's
-- own figures first; any other total is the same summed straight. Only a unit that may have
-- several rows is grouped (``repeats``: a quarter's months, a year's own value beside its
-- months, a unit that moved: a row per path); one with a single row is its own figure:
-- grouping every unit of the country cost 35 of a LAST year's 53 ms (national benchmark
-- database, numeric aggregate states for 17,000 units). The unit's latest value is the
-- greatest (days since 1970, value) pair, a plain aggregate rather than a sort per unit
u AS (SELECT * FROM native UNION ALL SELECT * FROM months UNION ALL SELECT * FROM years{live_rows}),
per_unit AS (
    SELECT tid, did, atype, sum(s) AS s, sum(n) AS n,
           (max(ARRAY[CAST(last_start - DATE '1970-01-01' AS numeric), last_v])
                FILTER (WHERE atype = 'LAST'))[2] AS last_v
    FROM u WHERE atype IN ('LAST', 'AVERAGE_SUM_ORG_UNIT') AND repeats
    GROUP BY tid, did, atype, combo, org_unit COLLATE "C"    -- grouping needs no language's order
    UNION ALL
    SELECT tid, did, atype, s, n, last_v FROM u WHERE atype IN ('LAST', 'AVERAGE_SUM_ORG_UNIT') AND NOT repeats
    UNION ALL
    SELECT tid, did, atype, s, n, NULL FROM u WHERE atype NOT IN ('LAST', 'AVERAGE_SUM_ORG_UNIT')
)
SELECT tid, did,
       CASE atype
            WHEN 'AVERAGE' THEN sum(s) / sum(n)
            WHEN 'AVERAGE_SUM_ORG_UNIT' THEN sum(s / n)
            WHEN 'LAST' THEN sum(last_v)
            ELSE sum(s)
       END AS value
FROM per_unit
GROUP BY tid, did, atype
"""
# Two statements from one text. While a history load's unit-years wait for the rebuilder
# (during and just after a load), their years are summed live from their months and
# quarters, as the rebuild will sum them: through a national load the years were last
# year's figures while the months and quarters were new. The rest of the time nothing
# waits, and the anti-join against the empty queue still cost every country-by-year
# question 1.6 ms of its 10.6 (8,500 yearly rows through a hash anti-join; national
# benchmark database, 400 interleaved questions): the plain statement is used then.
_PENDING = """-- (unit, year, element) keys a history load has made stale, until the rebuilder has them
pending AS MATERIALIZED (
    SELECT DISTINCT p.org_unit, p.year, de
    FROM aggregation.year_total_pending p CROSS JOIN unnest(p.data_elements) AS de
),
"""
_NOT_PENDING = """
      AND NOT EXISTS (SELECT 1 FROM pending p
                      WHERE p.org_unit = y.org_unit AND p.year = y.year AND p.de = y.data_element)"""
_YEARS_LIVE = """-- a stale key's year from its months and quarters, as the rebuild will sum them
years_live AS (
    SELECT tg.tid, dx.did, dx.atype, dx.combo, p.org_unit, sum(pp.v) AS s, count(*) AS n,
           max(pp.start_date) AS last_start,
           (max(ARRAY[CAST(pp.start_date - DATE '1970-01-01' AS numeric), pp.v]))[2] AS last_v,
           true AS repeats
    FROM tg CROSS JOIN dx
    JOIN pending p ON p.de = dx.de AND p.year = CAST(extract(year FROM tg.pstart) AS int)
    CROSS JOIN LATERAL (      -- each period's value (over combos for a total), by path
        SELECT f.path, f.start_date, sum(f.value) AS v
        FROM aggregation.data_value f
        WHERE f.org_unit = p.org_unit AND f.period >= CAST(p.year AS text) AND f.period < CAST(p.year + 1 AS text)
          AND extract(year FROM f.start_date) = p.year AND f.data_element = dx.de
          AND (dx.combo IS NULL OR f.combo = dx.combo) AND f.period_type <> 'Yearly' AND f.value IS NOT NULL
          AND f.path >= tg.lo AND f.path < tg.hi
        GROUP BY f.path, f.period, f.start_date
    ) pp
    WHERE tg.ptype = 'Yearly'
    GROUP BY tg.tid, dx.did, dx.atype, dx.combo, p.org_unit, pp.path
),
"""
_TOTALS = sa.text(_TOTALS_SQL.format(pending="", not_pending="", years_live="", live_rows=""))
_TOTALS_DURING_LOAD = sa.text(_TOTALS_SQL.format(pending=_PENDING, not_pending=_NOT_PENDING,
                                                 years_live=_YEARS_LIVE, live_rows=" UNION ALL SELECT * FROM years_live"))

_OWN_VALUE = sa.text("""
SELECT sum(f.value) FROM aggregation.data_value f
WHERE f.data_element = :de AND (CAST(:combo AS text) IS NULL OR f.combo = :combo)
  AND f.org_unit = :ou AND f.period = :pe AND f.value IS NOT NULL
HAVING count(*) > 0
""")


@dataclass(frozen=True)
class Item:
    code: str                 # as asked: POP or POP.F
    data_element: str
    combo: str | None
    aggregation_type: str
    percent: bool = False     # an average of yes (1) and no (0): shown as a percentage


@dataclass(frozen=True)
class Placement:
    """Where a keyword looks for units (the children of ``roots``, their grandchildren, or
    the units at ``level`` inside them), as a test on a place: a unit it names counts the
    values of its places that pass it, as the roots' totals count them."""
    roots: frozenset[str]
    depth: int | None = None     # 1: children of a root, 2: grandchildren
    level: int | None = None     # LEVEL-n inside a root

    def holds(self, path: str) -> bool:
        steps = path.strip("/").split("/")
        if self.level is not None:
            return len(steps) == self.level and not self.roots.isdisjoint(steps)
        return len(steps) > self.depth and steps[-1 - self.depth] in self.roots

    def units(self, md: Metadata, periods: list[Period]) -> list[str]:
        """Every unit that held such a place during one of ``periods`` (today, without any)."""
        spans = [(p.start, p.end) for p in periods] or [(today(), today())]
        return sorted(code for code, unit in md.org_units.items()
                      if any(self.holds(path.path) and any(
                          path.valid_from <= end and (path.valid_to is None or path.valid_to > start)
                          for start, end in spans) for path in unit.paths))


@dataclass
class Query:
    dx: list[Item]
    ou: list[str]
    pe: list[Period]
    boundaries: list[str] = field(default_factory=list)  # units a LEVEL-n was asked within
    filters: frozenset[str] = frozenset()  # dimensions asked as DHIS2 filters: not in the rows
    # units a keyword named, each answered with its values of the places that pass the
    # keyword's test (LEVEL-4 inside a district: the villages it held in the periods asked,
    # with their values of their time there), so that they add up to the district's total,
    # a year split by a move included
    placed: dict[str, Placement] = field(default_factory=dict)

    @property
    def scoped(self) -> list[str]:
        """The units the caller must hold for the query to be answered: those named, the
        boundaries of a LEVEL-n, and the roots a keyword's units were found under (the user's
        own, or any ``userOrgUnit`` names: its children are checked through it)."""
        roots = [r for placement in self.placed.values() for r in sorted(placement.roots)]
        return list(dict.fromkeys([*self.boundaries, *(ou for ou in self.ou if ou not in self.placed), *roots]))

    @property
    def merged(self) -> frozenset[str]:
        """The filters of several items (``filter=pe:LAST_12_MONTHS``, ``filter=ou:A;B``): each
        row is one total over all of them, as DHIS2 answers a filter."""
        return frozenset(d for d in self.filters if len({"ou": self.ou, "pe": self.pe}.get(d, ())) > 1)

    def paths(self, ou: str, md: Metadata) -> list[str]:
        """The places of ``ou`` whose stored values its rows count."""
        placement = self.placed.get(ou)
        return sorted({p.path for p in md.org_units[ou].paths if placement is None or placement.holds(p.path)})

    def answers(self, ou: str, pe: Period, md: Metadata) -> bool:
        """For a unit's own value (NONE): was it where the keyword looks when the period began?"""
        placement = self.placed.get(ou)
        return placement is None or placement.holds(md.period_path(ou, pe.start, pe.end))


DIMENSIONS = ("dx", "ou", "pe")
_CHANGES_THE_NUMBERS = ("aggregationType", "measureCriteria", "preAggregationMeasureCriteria", "approvalLevel",
                        "timeField", "orgUnitField")
# how DHIS2 is asked to name what the rows hold: by code (statnet's only identifier) or by
# UID, DHIS2's default, which a client names to be sure of it (statnet's codes stand in);
# NAME was answered with codes, as if it had been heard
_OUTPUT_ID_SCHEMES = ("outputIdScheme", "outputDataItemIdScheme", "outputDataElementIdScheme",
                      "outputOrgUnitIdScheme")
# DHIS2's reporting-rate items of a data set (dx=DS.REPORTING_RATE): answered by completeness
_RATE_ITEMS = ("REPORTING_RATE", "REPORTING_RATE_ON_TIME", "ACTUAL_REPORTS", "ACTUAL_REPORTS_ON_TIME",
               "EXPECTED_REPORTS")


MAX_LIMIT = 10000  # DHIS2's own bound on analytics' limit


def ordered(rows: list[dict], params: dict) -> list[dict]:
    """DHIS2's ``order`` (the rows by value, ASC or DESC), ``limit`` (the first n of them:
    a dashboard's top five) and ``skipData`` (metaData alone); checked in ``dhis2_params``.
    (Ignored, a top-five chart got every row in code order.)"""
    if flag(params, "skipData"):
        return []
    order = str(params.get("order") or "").strip().upper()
    if order:
        rows = sorted(rows, key=lambda r: r["value"], reverse=order == "DESC")
    if params.get("limit"):
        rows = rows[:int(str(params["limit"]))]
    return rows


def dhis2_params(raw: dict) -> tuple[dict, frozenset[str]]:
    """The query's parameters as one text each, and the dimensions asked as filters, from any
    of DHIS2's spellings: ``dx=A;B``, repeated ``dx=A&dx=B``, ``dimension=dx:A;B``, and
    ``filter=pe:2026`` (the rows then leave that dimension out, as DHIS2's do; a filter of
    several periods or units, ``filter=pe:LAST_12_MONTHS``, is one total over them)."""
    lists = {k: ([v] if isinstance(v, str) else list(v)) for k, v in raw.items()}
    params = {k: v[0] for k, v in lists.items() if v and k not in DIMENSIONS + ("dimension", "filter")}
    items = {d: list(lists.get(d, [])) for d in DIMENSIONS}
    # DHIS2's parameters that change the numbers, which statnet does not do: refused, never
    # answered as if absent (aggregationType=AVERAGE answered with the sum)
    problems = [f"{name}: {params[name]!r} is not supported (statnet aggregates each element by its own "
                f"aggregationType, over every stored value)" for name in _CHANGES_THE_NUMBERS if params.get(name)]
    problems += [f"{name}: {params[name]!r} is not supported: rows name everything by code (names, in "
                 "English and Lao, are in metaData.items)" for name in _OUTPUT_ID_SCHEMES
                 if params.get(name) and str(params[name]).strip().upper() not in ("CODE", "UID")]
    # DHIS2's dates instead of periods: refused by name (answered as if absent, pe=2026 with
    # October's dates gave the year); every period a data set rolls into has a code for pe
    problems += [f"{name}: {params[name]!r} is not supported: name the periods in pe (202610, 2026Q4, "
                 "2026S2, 2026July, LAST_12_MONTHS)" for name in ("startDate", "endDate") if params.get(name)]
    order, limit = params.get("order"), params.get("limit")
    if order is not None and str(order).strip().upper() not in ("ASC", "DESC"):
        problems.append(f"order: {order!r} is not ASC or DESC (the rows by value)")
    if limit is not None and not (str(limit).isascii() and str(limit).isdigit() and len(str(limit)) <= 5
                                  and 1 <= int(str(limit)) <= MAX_LIMIT):
        problems.append(f"limit: {limit!r} is not a number from 1 to {MAX_LIMIT}")
    filters, as_dimension = set(), {d for d in DIMENSIONS if items[d]}
    for kind in ("dimension", "filter"):
        for spec in lists.get(kind, []):
            name, colon, rest = spec.partition(":")
            if name not in DIMENSIONS or not colon:
                problems.append(f"{kind}: {spec!r} is not dx:, ou: or pe: followed by its items "
                                "(e.g. dimension=dx:POP;POP.F)")
                continue
            items[name].append(rest)
            (filters if kind == "filter" else as_dimension).add(name)
    for name in sorted(filters & as_dimension):
        # (merged, the two made one filter of two items, refused for that, or a filter of the
        # dimension's own items, silently leaving it out of the rows)
        problems.append(f"{name} is asked both as a dimension and as a filter: ask it as one")
    if problems:
        raise error(400, "; ".join(problems))
    for name in DIMENSIONS:
        if items[name]:
            params[name] = ";".join(items[name])
    return params, frozenset(filters)


# past these an expanded query (LEVEL-4 of a country, LAST_10_YEARS of months) is refused
# with a 400 saying so, not left to run for minutes
MAX_UNITS, MAX_PAIRS = 10_000, 20_000
_USER_UNITS = {"USER_ORGUNIT": 0, "USER_ORGUNIT_CHILDREN": 1, "USER_ORGUNIT_GRANDCHILDREN": 2}



def _split(raw, name: str) -> list[str]:
    """The ';'-separated items of a dimension, each once (``pe=2026;2026`` is one period)."""
    if raw is None or str(raw).strip() == "":
        raise error(400, f"{name} is required (e.g. dx=POP;POP.F&ou=03&pe=2026)")
    parts = list(dict.fromkeys(p for p in str(raw).split(";") if p != ""))
    if len(parts) > 200:
        raise error(400, f"{name} lists {len(parts)} items; at most 200 per query")
    return parts


def anchor_day(params: dict) -> dt.date:
    """What relative periods count from: ``relativePeriodDate`` (DHIS2's name), else today."""
    raw = params.get("relativePeriodDate")
    if raw is None:
        return today()
    try:
        return parse_day("relativePeriodDate", raw)
    except PeriodError as exc:
        raise error(400, str(exc)) from None


def user_roots(md: Metadata, principal, day: dt.date, params: dict | None = None) -> list[str]:
    """DHIS2's USER_ORGUNIT: the units of ``userOrgUnit=A;B`` when given (a dashboard's
    choice among a user's units: ignored, the answer was another unit's total), else the
    user's scope root; the hierarchy's roots for the unscoped. (Scope is checked on what
    is answered, as for any unit named.)"""
    given = str((params or {}).get("userOrgUnit") or "").strip()
    if given:
        codes = list(dict.fromkeys(c for c in given.split(";") if c))
        unknown = [c for c in codes if c not in md.org_units]
        if unknown:
            raise error(400, f"userOrgUnit: unknown org unit {unknown[0]!r}")
        return codes
    return [principal.org_unit] if principal is not None and principal.org_unit in md.org_units \
        else md.roots(day)


def _units(items: list[str], md: Metadata, principal, problems: list[str],
           periods: list[Period], params: dict) -> tuple[list[str], list[str], dict[str, Placement]]:
    """(units asked, boundaries, how keywords placed theirs) from ``ou``'s items, DHIS2's
    keywords expanded over the hierarchy as it stood in the periods asked: USER_ORGUNIT
    (the user's scope root; the roots for the unscoped), its CHILDREN and GRANDCHILDREN, and
    LEVEL-n, the units at depth n inside the other items (which then bound it and are not
    answered themselves) or inside the user's root."""
    own = user_roots(md, principal, today(), params)
    asked, levels, placed, explicit = [], [], {}, set()
    for code in items:
        if code in _USER_UNITS:
            depth = _USER_UNITS[code]
            if depth == 0:
                asked.extend(own)
                continue
            placement = Placement(frozenset(own), depth=depth)
            for unit in placement.units(md, periods):
                asked.append(unit)
                placed.setdefault(unit, placement)
        elif code.startswith("LEVEL-"):
            level = code[len("LEVEL-"):]
            if level.isascii() and level.isdigit() and len(level) <= 2 and 0 < int(level):
                levels.append(int(level))
            else:
                problems.append(f"ou: {code!r} is not LEVEL-n with n a level from 1 (the root)")
        elif code not in md.org_units:
            problems.append(f"ou: unknown org unit {code!r}")
        else:
            asked.append(code)
            explicit.add(code)
    # a unit also asked by its code is answered whole, wherever it stood
    placed = {unit: placement for unit, placement in placed.items() if unit not in explicit}
    if not levels:
        return list(dict.fromkeys(asked)), [], placed
    boundaries = list(dict.fromkeys(asked)) or own
    units = []
    for level in levels:
        placement = Placement(frozenset(boundaries), level=level)
        for unit in placement.units(md, periods):
            units.append(unit)
            placed.setdefault(unit, placement)
    return list(dict.fromkeys(units)), boundaries, placed


def parse_query(params: dict, md: Metadata, principal=None, filters: frozenset[str] = frozenset()) -> Query:
    """The query's items, units and periods, relative ones worked out; every problem of it
    named in one 400."""
    problems, items, periods = [], [], []
    for code in _split(params.get("dx"), "dx"):
        de_code, _, combo = code.partition(".")
        de = md.data_elements.get(de_code)
        if de is None and combo in _RATE_ITEMS and de_code in md.data_sets:
            problems.append(f"dx: {code!r}: reporting rates are answered by "
                            f"/api/completeness?ds={de_code}&ou=...&pe=...")
        elif de is None:
            problems.append(f"dx: unknown data element {de_code!r}")
        elif combo and combo not in de.combos:
            problems.append(f"dx: {code!r}: {de_code} has no category option combo {combo!r} "
                            f"(one of {', '.join(de.combos)})")
        elif de.value_type == "TEXT":
            problems.append(f"dx: {de_code!r} holds text, which is not aggregated")
        else:
            items.append(Item(code, de_code, combo or None, de.aggregation_type,
                              de.value_type == "BOOLEAN" and de.aggregation_type == "AVERAGE"))
    day = anchor_day(params)
    for code in _split(params.get("pe"), "pe"):
        try:
            periods.extend(periods_named(code, day))
        except PeriodError as exc:
            problems.append(f"pe: {exc}")
    periods = list(dict.fromkeys(periods))
    units, boundaries, placed = _units(_split(params.get("ou"), "ou"), md, principal, problems, periods, params)
    if problems:
        raise error(400, "; ".join(problems))
    if "dx" in filters and len(items) != 1:
        raise error(400, f"filter dx ({len(items)} items): a filter of data items takes one (their sum "
                         "mixes what each element counts); ask them as a dimension instead")
    if "pe" in filters:
        # one total over the periods: a value in two of them would count twice
        ordered = sorted(periods, key=lambda p: (p.start, p.end))
        overlaps = [f"{a.code} and {b.code}" for a, b in zip(ordered, ordered[1:]) if b.start <= a.end]
        if overlaps:
            raise error(400, f"filter pe: {'; '.join(overlaps)} overlap (a value would count twice in "
                             "their total): give periods that do not")
    if len(units) > MAX_UNITS or len(units) * len(periods) > MAX_PAIRS:
        raise error(400, f"the query asks {len(units)} org units by {len(periods)} periods; at most "
                   f"{MAX_UNITS:,} units and {MAX_PAIRS:,} unit-periods per query: ask a higher "
                   "level, a smaller boundary or fewer periods")
    return Query(items, units, periods, boundaries, filters, placed)


def subtree_end(prefix: str) -> str:
    """The first path after ``prefix``'s subtree: every path under "/LA/03/" sorts before
    "/LA/030" bytewise ('/' < '0'), so a subtree is the range [prefix, subtree_end)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# a fraction's significant digits in every answer: what a JSON number (a double) holds
_FRACTION_DIGITS = Context(prec=15)


def settled(value: Decimal) -> Decimal:
    """A total as every format shows it: a sum exactly (whole, or with the few decimals its
    values were entered with: a sum of large numbers keeps its last digit), a quotient's
    long tail to 15 significant digits. PostgreSQL's quotients carry 20 (an average of
    averages 9294.2499999999999999 for 9294.25), and JSON showed the double nearest them
    (53.333333333333336) where CSV showed them all: three formats, three numbers."""
    if value.normalize().as_tuple().exponent >= -6:
        return value
    return _FRACTION_DIGITS.plus(value)


def number(value: Decimal) -> int | float:
    """A total as a JSON number: an integer where it is one."""
    value = settled(value)
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def plain(value: Decimal | int | float) -> str:
    """A total as CSV text: the JSON number's digits, and never in exponent form (a float
    printed 1e-07 and lost the last digits of a large sum)."""
    value = settled(value if isinstance(value, Decimal) else Decimal(str(value)))
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def as_json(rows: list[dict], filters: frozenset[str] = frozenset()) -> list[dict]:
    return [{**{k: v for k, v in r.items() if k not in filters}, "value": number(r["value"])} for r in rows]


def moved_units(md: Metadata) -> list[str]:
    """Units that have held more than one path (worked out once per metadata snapshot)."""
    if "moved_units" not in md.derived:
        md.derived["moved_units"] = sorted(code for code, u in md.org_units.items() if len(u.paths) > 1)
    return md.derived["moved_units"]


def totals(conn: sa.Connection, q: Query, md: Metadata) -> list[dict]:
    """Rows ``{dx, ou, pe, value}`` for every combination that has data (``value`` a
    Decimal: ``as_json`` and ``plain`` put it in the answer's form). ``conn``: a
    REPEATABLE READ transaction, so that whether a load's years are waiting and the
    figures are read in one snapshot (a chunk committed between them would show its new
    months beside its stale years)."""
    targets = {"tid": [], "lo": [], "hi": [], "ptype": [], "pstart": [], "pend": [], "several": []}
    pairs = []  # (ou, pe) of each tid; None for a filter of several items (one total over them)
    unit_groups = [(None, q.ou)] if "ou" in q.merged else [(ou, [ou]) for ou in q.ou]
    period_groups = [(None, q.pe)] if "pe" in q.merged else [(pe, [pe]) for pe in q.pe]
    for ou, units in unit_groups:
        # A stored value's path is its unit's ancestry when its period began, so it is in
        # ou's subtree "as of that period" exactly when it starts with one of ou's paths.
        # Of units filtered together, one inside another's subtree adds nothing: its values
        # are the other's already, and counted once
        paths = _outermost({path for unit in units for path in q.paths(unit, md)})
        for pe, periods in period_groups:
            tid = len(pairs)
            pairs.append((ou, pe))
            for period in periods:
                for path in paths:
                    targets["tid"].append(tid)
                    targets["lo"].append(path)
                    targets["hi"].append(subtree_end(path))
                    targets["ptype"].append(period.type)
                    targets["pstart"].append(period.start)
                    targets["pend"].append(period.end)
                    # a unit then has a row per period: worked out per unit first (LAST, ...)
                    targets["several"].append(pe is None)
    aggregated = [item for item in q.dx if item.aggregation_type != "NONE"]
    rows = []
    if aggregated and targets["tid"]:
        dx = {"did": [], "de": [], "combo": [], "atype": []}
        for did, item in enumerate(aggregated):
            per_combo = item.combo is None and item.aggregation_type in BY_UNIT
            for combo in md.data_elements[item.data_element].combos if per_combo else [item.combo]:
                dx["did"].append(did)
                dx["de"].append(item.data_element)
                dx["combo"].append(combo)
                dx["atype"].append(item.aggregation_type)
        during_load = any_pending_year_totals(conn)
        for tid, did, value in conn.execute(_TOTALS_DURING_LOAD if during_load else _TOTALS,
                                            {**targets, **dx, "moved": moved_units(md)}):
            ou, pe = pairs[tid]
            rows.append({"dx": aggregated[did].code, "ou": ou, "pe": pe and pe.code,
                         "value": value * 100 if aggregated[did].percent else value})
    for item in q.dx:
        if item.aggregation_type != "NONE":
            continue
        for ou, pe in pairs:
            if ou is None or pe is None:
                continue  # NONE is a unit's own value for its own period: there is none of several
            if not q.answers(ou, pe, md):
                continue
            value = conn.execute(_OWN_VALUE, {"de": item.data_element, "combo": item.combo,
                                              "ou": ou, "pe": pe.code}).scalar()
            if value is not None:
                rows.append({"dx": item.code, "ou": ou, "pe": pe.code, "value": value})
    order = ({i.code: n for n, i in enumerate(q.dx)}, {o: n for n, o in enumerate(q.ou)},
             {p.code: n for n, p in enumerate(q.pe)})
    rows.sort(key=lambda r: (order[0][r["dx"]], order[1].get(r["ou"], 0), order[2].get(r["pe"], 0)))
    return rows


def _outermost(paths: set[str]) -> list[str]:
    """``paths`` less those inside another one's subtree (a path is its ancestry, "/LA/03/").
    Sorted, a subtree's paths follow its root's (as ``subtree_end`` has it): one pass, not a
    comparison of every pair (a filter of a country's 8,500 villages)."""
    kept: list[str] = []
    for path in sorted(paths):
        if not (kept and path.startswith(kept[-1])):
            kept.append(path)
    return kept


def names(q: Query, md: Metadata) -> dict:
    """Names (English and Lao) of everything in the answer, as DHIS2's ``metaData.items``."""
    items = {}
    for item in q.dx:
        de = md.data_elements[item.data_element]
        suffix = f" {item.combo}" if item.combo else ""
        items[item.code] = {"name": de.name + suffix, "nameLo": (de.name_lo + suffix) if de.name_lo else None}
    for ou in q.ou:
        unit = md.org_units[ou]
        items[ou] = {"name": unit.name, "nameLo": unit.name_lo}
    for pe in q.pe:
        items[pe.code] = {"name": pe.code}
    return {"items": items, "dimensions": {"dx": [i.code for i in q.dx], "ou": q.ou,
                                           "pe": [p.code for p in q.pe]}}
