"""DHIS2 data value CSV (``text/csv``).

The CSV names no data set: it comes from ``?dataSet=CODE``, or, when absent,
is inferred as the one data set that holds every element of the file and is
assigned to its units (``RawReturn.infer_data_set``, resolved by the service
against its metadata). The first row's period and org unit are the return's;
every row carries its own, like a JSON value with its own period and org unit.
"""
from __future__ import annotations

from services.submission.formats import ParseError, RawReturn, RawValue, attribute_combo_problem, conflict
from shared import dhis2_csv


def parse(body: str, params: dict) -> RawReturn:
    try:
        rows = dhis2_csv.read(body)
    except dhis2_csv.CsvError as exc:
        raise ParseError([conflict(f"line {line}", None, message) for line, message in exc.problems]) from None
    raw = RawReturn(data_set=params.get("dataSet") or None)
    raw.infer_data_set = raw.data_set is None
    raw.lines_name_places = True
    for n, (line, f) in enumerate(rows):
        de, period, org_unit, combo, aoc, value, stored_by, _updated, comment, followup = f
        problem = attribute_combo_problem(f"line {line}.attributeoptioncombo", aoc)
        if problem:
            raw.problems.append(problem)
        if n == 0:
            raw.period, raw.org_unit = period, org_unit
        raw.values.append(RawValue(n, de, combo or None, value, comment or None, period, org_unit, line=line,
                                   stored_by=stored_by, followup=followup))
    return raw
