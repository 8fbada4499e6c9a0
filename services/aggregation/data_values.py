"""``GET /api/dataValueSets``: the stored values themselves, as DHIS2 exports them.

What a district system reads back to check what the province holds: each accepted
value as it stands (the latest return's), with its comment, who sent it and when it
last changed. Never a total: that is analytics. The parameters are DHIS2's:

* ``dataSet`` (one or more): the values of its data elements;
* ``period`` (one or more) or ``startDate`` and ``endDate``: periods inside those dates;
* ``orgUnit`` (one or more), with ``children=true`` everything in its subtree as of
  each value's period (as analytics counts it);
* ``lastUpdated``: only values changed since that day or instant (Asia/Vientiane when it
  names no offset); alone, it is the whole filter, as in DHIS2's sync;
* ``includeDeleted=true``: deleted values too, flagged ``deleted``.

A parameter may be repeated (``dataSet=A&dataSet=B``) or list items split by ``,``
or ``;``. JSON is DHIS2's ``dataValueSet``; CSV is DHIS2's import CSV, so what is
exported can be sent back as a return.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re

import sqlalchemy as sa

from services.aggregation.analytics import subtree_end
from shared.api import ApiError, error, flag, id_scheme_refusal
from shared.dhis2_csv import COLUMNS, DELETED
from shared.periods import LOCAL_TZ, Period, PeriodError, parse_day, show
from shared.replica import Metadata

# an export is one RPC answer: past this it is refused with its size, to be asked in parts
MAX_VALUES = 100_000

_VALUES = sa.text("""
SELECT f.data_element, f.period, f.org_unit, f.combo, f.text_value, f.stored_by, f.updated_at, f.followup,
       f.comment, f.deleted
FROM aggregation.data_value f
JOIN unnest(CAST(:lo AS text[]), CAST(:hi AS text[])) AS w(lo, hi) ON f.path >= w.lo AND f.path < w.hi
WHERE f.data_element = ANY(CAST(:elements AS text[]))
  AND (CAST(:periods AS text[]) IS NULL OR f.period = ANY(CAST(:periods AS text[])))
  AND (CAST(:start AS date) IS NULL OR f.start_date >= CAST(:start AS date))
  AND (CAST(:end AS date) IS NULL OR f.end_date <= CAST(:end AS date))
  AND (CAST(:units AS text[]) IS NULL OR f.org_unit = ANY(CAST(:units AS text[])))
  AND (CAST(:since AS timestamptz) IS NULL OR f.updated_at >= CAST(:since AS timestamptz))
  AND (:deleted OR NOT f.deleted)
ORDER BY f.org_unit COLLATE "C", f.start_date, f.period_type, f.data_element COLLATE "C", f.combo COLLATE "C"
LIMIT :limit
""")


def _items(params: dict, name: str) -> list[str]:
    """A parameter's items: repeated, or split by ',' or ';', each once, in order."""
    raw = params.get(name) or []
    raw = [raw] if isinstance(raw, str) else raw
    return list(dict.fromkeys(p for r in raw for p in re.split(r"[,;]", r) if p))


def _one(params: dict, name: str) -> str | None:
    items = _items(params, name)
    if len(items) > 1:
        raise error(400, f"{name}: give one value, not {len(items)} ({', '.join(items)})")
    return items[0] if items else None


KNOWN = {"dataSet", "period", "startDate", "endDate", "orgUnit", "children", "includeDeleted", "lastUpdated",
         "idScheme", "dataElementIdScheme", "orgUnitIdScheme"}


def _date(name: str, raw: str, problems: list[str]) -> dt.date | None:
    """A day, any year: DHIS2 sync scripts ask from 1900-01-01 for "everything"."""
    try:
        return parse_day(name, raw, any_year=True)
    except PeriodError as exc:
        problems.append(str(exc))
        return None


def _moment(name: str, raw: str, problems: list[str]) -> dt.datetime | None:
    """A day (from its start) or an instant, ISO 8601; without an offset, in Asia/Vientiane.
    A '+' left unescaped in a URL arrives as a space: read as the '+' it was."""
    given = raw
    raw = re.sub(r"(T[\d:.]+) (\d{2}:?\d{2})$", r"\1+\2", raw)
    day_at = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:?\d{2})", raw, re.ASCII)
    if day_at:
        # a day at an offset (XML Schema's xs:date): from its start there (Python read
        # 2026-11-29+07:00 as seven o'clock in the morning, and a sync missed those hours)
        raw = f"{day_at[1]}T00:00{day_at[2]}"
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ][\d:.]+)?(Z|[+-]\d{2}:?\d{2})?", raw, re.ASCII):
            moment = dt.datetime.fromisoformat(raw)
            # to UTC here: PostgreSQL takes no offset beyond 15:59, Python any under a day
            moment = moment if moment.tzinfo else moment.replace(tzinfo=LOCAL_TZ)
            try:
                return moment.astimezone(dt.timezone.utc)
            except OverflowError:  # 0001-01-01 in Vientiane is in year 0 in UTC: from the start (or the end)
                return (dt.datetime.min if moment.year == 1 else dt.datetime.max).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        pass
    problems.append(f"{name}: {given!r} is not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS+07:00)")
    return None


def parse(params: dict, md: Metadata) -> dict:
    """The export asked, every problem named in one 400."""
    problems = []
    data_sets = _items(params, "dataSet")
    if not data_sets:
        problems.append("dataSet is required (e.g. dataSet=VILLAGE_Y&period=2026&orgUnit=03)")
    problems += [f"dataSet: unknown data set {c!r}" for c in data_sets if c not in md.data_sets]
    org_units = _items(params, "orgUnit")
    if not org_units:
        problems.append("orgUnit is required")
    problems += [f"orgUnit: unknown org unit {c!r}" for c in org_units if c not in md.org_units]
    periods, period_codes = [], _items(params, "period")
    for code in period_codes:
        try:
            periods.append(Period.parse(code))
        except PeriodError as exc:
            problems.append(f"period: {exc}")
    start, end, since = _one(params, "startDate"), _one(params, "endDate"), _one(params, "lastUpdated")
    if period_codes and (start or end):
        problems.append("give period or startDate and endDate, not both")
    elif not period_codes and bool(start) != bool(end):
        problems.append("startDate and endDate go together")
    elif not (period_codes or start or since):
        problems.append("period, startDate and endDate, or lastUpdated is required")
    dates = {}
    for name, raw in (("startDate", start), ("endDate", end)):
        dates[name] = _date(name, raw, problems) if raw else None
    dates["lastUpdated"] = _moment("lastUpdated", since, problems) if since else None
    if dates["startDate"] and dates["endDate"] and dates["startDate"] > dates["endDate"]:
        problems.append(f"startDate {start} is after endDate {end}")
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        problems.append(f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(KNOWN))})")
    problems += filter(None, (id_scheme_refusal(name, _one(params, name))
                              for name in ("idScheme", "dataElementIdScheme", "orgUnitIdScheme")))
    switches = {}
    for name in ("children", "includeDeleted"):
        try:
            switches[name] = bool(flag({name: _one(params, name)}, name))
        except ApiError as exc:  # flag's own 400, said with the others
            problems.append(exc.body["message"])
    if problems:
        raise error(400, "; ".join(problems))
    return {"data_sets": data_sets, "org_units": org_units, "periods": periods,
            "children": switches["children"], "deleted": switches["includeDeleted"], **dates}


def values(conn: sa.Connection, md: Metadata, asked: dict, within: str | None = None) -> list[dict]:
    """The stored values asked, as DHIS2's ``dataValues``; with ``within`` (a scoped reader's
    root), only those whose place was in its subtree in their period."""
    elements = sorted({de for ds in asked["data_sets"] for de in md.data_sets[ds].data_elements})
    # a unit's values are under one of the paths it has held; with children, so is its subtree's
    paths = {p.path for ou in asked["org_units"] for p in md.org_units[ou].paths}
    if within is not None:
        # each value's path is its place's as of its period, so the reader's part of a range
        # is where it meets a path the root has held: the deeper of two nested prefixes. A
        # lastUpdated export names no period, and read every path the unit ever held: a
        # village moved in from another district gave its months there to the new one
        roots = {p.path for p in md.org_units[within].paths}
        paths = {a if a.startswith(r) else r for a in paths for r in roots if a.startswith(r) or r.startswith(a)}
    paths = sorted(paths)
    since = asked["lastUpdated"]
    rows = conn.execute(_VALUES, {
        "lo": paths, "hi": [subtree_end(p) for p in paths], "elements": elements,
        "periods": [p.code for p in asked["periods"]] or None,
        "start": asked["startDate"], "end": asked["endDate"],
        "units": None if asked["children"] else asked["org_units"],
        "since": since,
        "deleted": asked["deleted"], "limit": MAX_VALUES + 1}).all()
    if len(rows) > MAX_VALUES:
        raise error(400, f"more than {MAX_VALUES:,} values asked: ask fewer periods, units or data sets")
    rows = _of_the_data_sets(conn, md, asked["data_sets"], rows)
    out = []
    for r in rows:
        value = {"dataElement": r.data_element, "period": r.period, "orgUnit": r.org_unit,
                 "categoryOptionCombo": r.combo, "value": r.text_value or "", "storedBy": r.stored_by,
                 "lastUpdated": show(r.updated_at), "comment": r.comment, "followup": r.followup}
        if asked["deleted"]:
            value["deleted"] = r.deleted
        out.append(value)
    return out


_REPORTED = sa.text("""
SELECT data_set, org_unit, period FROM aggregation.completeness
WHERE data_set = ANY(CAST(:data_sets AS text[])) AND org_unit = ANY(CAST(:units AS text[]))
""")


def _of_the_data_sets(conn: sa.Connection, md: Metadata, data_sets: list[str], rows: list) -> list:
    """The rows that are a data set's: of one of its elements, at a unit it is assigned (as
    intake decides it, where the unit sat when the period began) or that reported it there.
    An element two data sets share has values at the other's units too: exported under this
    data set's name they could not be sent back (intake refuses a unit not assigned it)."""
    units = sorted({r.org_unit for r in rows})
    reported = {tuple(x) for x in conn.execute(_REPORTED, {"data_sets": data_sets, "units": units})} if units else set()
    sets = [md.data_sets[code] for code in data_sets]
    starts: dict[str, dt.date] = {}
    decided: dict[tuple[str, str, str], bool] = {}

    def its(r) -> bool:
        key = (r.data_element, r.org_unit, r.period)
        if key not in decided:
            if r.period not in starts:
                starts[r.period] = Period.parse(r.period).start
            day = max(starts[r.period], md.org_units[r.org_unit].opening_date)
            decided[key] = any(r.data_element in ds.data_elements
                               and ((ds.code, r.org_unit, r.period) in reported or md.assigned(ds, r.org_unit, day))
                               for ds in sets)
        return decided[key]

    return [r for r in rows if its(r)]


def as_json(asked: dict, data_values: list[dict]) -> dict:
    """DHIS2's ``dataValueSet``: the header names the data set, period and unit when one of
    each was asked (and not a subtree), as DHIS2's export does."""
    body = {}
    if len(asked["data_sets"]) == 1:
        body["dataSet"] = asked["data_sets"][0]
    if len(asked["periods"]) == 1:
        body["period"] = asked["periods"][0].code
    if len(asked["org_units"]) == 1 and not asked["children"]:
        body["orgUnit"] = asked["org_units"][0]
    body["dataValues"] = data_values
    return body


def as_csv(data_values: list[dict], with_deleted: bool = False) -> str:
    """DHIS2's data value CSV, header row first: importable as a return as it stands (with
    ``includeDeleted``, DHIS2's eleventh column, ``deleted``, which intake reads too)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS + ((DELETED,) if with_deleted else ()))
    for v in data_values:
        row = [v["dataElement"], v["period"], v["orgUnit"], v["categoryOptionCombo"], "",
               v["value"], v["storedBy"] or "", v["lastUpdated"] or "", v["comment"] or "",
               "true" if v["followup"] else "false"]
        writer.writerow(row + (["true" if v["deleted"] else "false"] if with_deleted else []))
    return out.getvalue()
