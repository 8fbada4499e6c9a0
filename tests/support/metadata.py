"""In-memory ``Metadata`` snapshots for unit tests (no database)."""
from __future__ import annotations

import datetime as dt

from shared.replica import (DataElement, DataSet, FocalPoint, Metadata, OrgUnit, UnitPath,
                            ValidationRule)

OPEN = dt.date(2000, 1, 1)


def snapshot(parents: dict[str, str | None], elements=(), data_sets=(), rules=(), focal_points=(),
             closed: dict | None = None) -> Metadata:
    """Org units from ``{code: parent}`` (no moves), plus the given objects."""
    def path(code):
        p = parents[code]
        return (path(p) if p else "/") + code + "/"

    units = {}
    for code in parents:
        full = path(code)
        units[code] = OrgUnit(code, f"Unit {code}", None, OPEN, (closed or {}).get(code), False,
                              (UnitPath(full, full.count("/") - 1, OPEN, None),))
    return Metadata(1, units, {e.code: e for e in elements}, {d.code: d for d in data_sets},
                    {r.code: r for r in rules}, {f.code: f for f in focal_points})


def element(code, value_type="INTEGER", aggregation="SUM", combos=("default",)) -> DataElement:
    return DataElement(code, code, None, value_type, aggregation, tuple(combos), {})


def data_set(code, elements, period_type="Yearly", level=None, units=(), timely=15, expiry=0) -> DataSet:
    return DataSet(code, code, None, period_type, tuple(elements), level, frozenset(units), timely, expiry)


def rule(code, left, operator, right, importance="HIGH", strategy="SKIP_IF_ALL_VALUES_MISSING",
         data_set=None) -> ValidationRule:
    return ValidationRule(code, code, None, importance, left, operator, right, strategy, data_set)


def focal_point(code, org_unit, role="supervisor", email=None, language="lo") -> FocalPoint:
    return FocalPoint(code, code, org_unit, role, email, None, language, False)
