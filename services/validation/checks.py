"""The checks a return goes through, as pure functions of (values, metadata).

Policy (CONTRACT 4): any HIGH violation rejects the whole return; MEDIUM and
LOW violations are warnings that travel with the accepted return.
"""
from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from shared import expressions
from shared.replica import DataSet, Metadata, ValidationRule
from shared.values import ValueTypeError, normalise, numeric


@lru_cache(maxsize=4096)
def _parsed(expression: str) -> expressions.Node:
    # rules were parsed at import by the registry; parsing again here is cached
    return expressions.parse(expression)


def rules_for(md: Metadata, ds: DataSet) -> list[ValidationRule]:
    """Rules of the data set, and unattached rules about any of its elements (as DHIS2 does)."""
    out = list(md.rules_by_data_set.get(ds.code, []))
    elements = set(ds.data_elements)
    for rule in md.rules_by_data_set.get(None, []):
        refs = expressions.references(_parsed(rule.left)) + expressions.references(_parsed(rule.right))
        if any(r.data_element in elements for r in refs):
            out.append(rule)
    return sorted(out, key=lambda r: r.code)


def evaluate_rule(rule: ValidationRule, values: dict[tuple[str, str], Decimal]) -> dict | None:
    """The violation of ``rule`` by ``values`` (one unit and period), or None."""
    left, right = _parsed(rule.left), _parsed(rule.right)
    probe_l = expressions.evaluate(left, values)
    probe_r = expressions.evaluate(right, values)
    refs, missing = probe_l.refs + probe_r.refs, probe_l.missing + probe_r.missing
    strategy = rule.missing_value_strategy
    if strategy == "SKIP_IF_ANY_VALUE_MISSING" and missing > 0:
        return None
    if strategy == "SKIP_IF_ALL_VALUES_MISSING" and refs > 0 and missing == refs:
        return None
    # not skipped: a missing value counts as zero
    lv = expressions.evaluate(left, values, missing_as_zero=True).value
    rv = expressions.evaluate(right, values, missing_as_zero=True).value
    if lv is None or rv is None:  # division by zero: the rule cannot be judged
        return None
    if expressions.OPERATORS[rule.operator](lv, rv):
        return None
    return {"rule": rule.code, "importance": rule.importance, "left": float(lv),
            "operator": rule.operator, "right": float(rv),
            "message": f"{rule.name}: {rule.left} ({lv}) {rule.operator} {rule.right} ({rv}) is false"}


def check_values(ds: DataSet, values: list[dict], md: Metadata) -> tuple[list[dict], dict]:
    """Value-type violations (HIGH) and the numeric values by (unit, period) for the rules."""
    violations, places = [], {}
    for v in values:
        de = md.data_elements.get(v["data_element"])
        place = places.setdefault((v["org_unit"], v["period"]), {})
        if de is None or de.code not in ds.data_elements:
            violations.append({"rule": "DATA_ELEMENT", "importance": "HIGH", "left": None, "operator": "in",
                               "right": None, "org_unit": v["org_unit"], "period": v["period"],
                               "message": f"data element {v['data_element']!r} is not in data set {ds.code!r}"})
            continue
        try:
            text = normalise(de.value_type, v["value"])
        except ValueTypeError as exc:
            violations.append({"rule": "VALUE_TYPE", "importance": "HIGH", "left": None,
                               "operator": de.value_type, "right": None, "org_unit": v["org_unit"],
                               "period": v["period"], "message": f"{de.code}: {exc}"})
            continue
        number = numeric(de.value_type, text)
        if number is not None:
            place[(de.code, v["category_option_combo"])] = number
    return violations, places


def check_return(data_set: str, values: list[dict], md: Metadata) -> list[dict]:
    """Every violation of a return, sorted HIGH first."""
    ds = md.data_sets.get(data_set)
    if ds is None:
        return [{"rule": "DATA_SET", "importance": "HIGH", "left": None, "operator": "exists", "right": None,
                 "org_unit": "", "period": "", "message": f"unknown data set {data_set!r}"}]
    violations, places = check_values(ds, values, md)
    rules = rules_for(md, ds)
    for (org_unit, period), numbers in sorted(places.items()):
        for rule in rules:
            found = evaluate_rule(rule, numbers)
            if found:
                violations.append({**found, "org_unit": org_unit, "period": period})
    order = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}
    return sorted(violations, key=lambda v: (order[v["importance"]], v["rule"], v["org_unit"], v["period"]))


def rejected(violations: list[dict]) -> bool:
    return any(v["importance"] == "HIGH" for v in violations)
