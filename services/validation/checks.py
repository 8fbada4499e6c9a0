"""The checks a return goes through, as pure functions of (values, metadata, what is stored).

Policy (CONTRACT 4): any HIGH violation rejects the whole return; MEDIUM and
LOW violations are warnings that travel with the accepted return.

Rules are judged on the *merged* view of each (org unit, period) the return
touches, as DHIS2 judges them on stored data: the values accepted before,
overlaid with this return's (a later return replaces only what it carries;
``""`` deletes). A return that sends households alone is still checked
against the population sent last month for the same period.

Outliers are judged per value against the unit's own past (see ``outliers``).
"""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from shared import expressions
from shared.periods import Period, PeriodError
from shared.replica import DataSet, Metadata, ValidationRule
from shared.values import ValueTypeError, normalise, numeric

ORDER = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}

# Robust z-score (Iglewicz & Hoaglin): |x - median| / (1.4826 * MAD) above 3.5 is an outlier.
Z_LIMIT = Decimal("3.5")
MAD_TO_SD = Decimal("1.4826")
MEAN_AD_TO_SD = Decimal("1.2533")
MIN_HISTORY = 4          # fewer previous periods than this say nothing about what is usual
HISTORY_PERIODS = 12     # the most recent previous periods of the same type that are looked at
MIN_RELATIVE_WIDTH = Decimal("0.1")  # never narrower than median +-10%: a series that never moved
                                     # should not flag every small change


log = logging.getLogger(__name__)


@lru_cache(maxsize=4096)
def _parsed(expression: str) -> expressions.Node:
    # rules were parsed at import by the registry; parsing again here is cached
    return expressions.parse(expression)


@lru_cache(maxsize=4096)
def _readable(expression: str) -> bool:
    """Does the expression parse under this version's grammar? A rule imported before a
    limit was added (a number beyond 1e300) does not: it is left out, said once, rather
    than failing every return it would judge."""
    try:
        _parsed(expression)
        return True
    except expressions.ExpressionError as exc:
        log.warning("validation rule expression %r is not judged: %s (import the rule again, fixed)",
                    expression, exc)
        return False


Place = tuple[str, str]                        # (org unit, period)
Key = tuple[str, str]                          # (data element, combo)


@dataclass
class Stored:
    """What validation already holds for the places and elements of one return."""
    values: dict[Place, dict[Key, tuple[Decimal | None, int | None]]]  # (value or None if deleted, seq; None: loaded)
    history: dict[tuple[str, str, str, str], list[Decimal]]     # (unit, de, combo, period) -> its previous periods, newest first

    @classmethod
    def empty(cls) -> Stored:
        return cls({}, {})


def rules_for(md: Metadata, ds: DataSet) -> list[ValidationRule]:
    """The rules about any of the data set's elements, as DHIS2 chooses them: attached to
    none, or to any data set of the same period type. A rule follows its elements, not the
    form it was written for: attached to its own data set only, a HIGH rule let the same
    values in through another form of the unit, and then rejected a later return of its
    own data set that sent none of them (the merged view held them). The period type keeps
    a yearly data set's rule (a year's population) off a monthly form sharing an element,
    as DHIS2's rule period type does. A rule left about none of the data set's elements
    (one taken out since) can only see missing values, and with NEVER_SKIP rejected every
    return."""
    key = ("rules_for", ds.code)
    cached = md.derived.get(key)
    if cached is not None:
        return cached
    elements = set(ds.data_elements)

    def about_its_elements(rule: ValidationRule) -> bool:
        if not (_readable(rule.left) and _readable(rule.right)):
            return False
        refs = expressions.references(_parsed(rule.left)) + expressions.references(_parsed(rule.right))
        return any(r.data_element in elements for r in refs)

    same_type = [code for code, other in md.data_sets.items() if other.period_type == ds.period_type]
    rules = sorted((rule for key in (None, *same_type) for rule in md.rules_by_data_set.get(key, [])
                    if about_its_elements(rule)), key=lambda r: r.code)
    md.derived[key] = rules  # a snapshot never changes: worked out once per data set
    return rules


def with_totals(values: dict[Key, Decimal]) -> dict[Key, Decimal]:
    """``values`` plus ``(DE, None)``: the total over DE's combos, which ``#{DE}`` reads."""
    totals: dict[Key, Decimal] = {}
    for (de, _), v in values.items():
        totals[(de, None)] = totals.get((de, None), Decimal(0)) + v
    return {**values, **totals}


def evaluate_rule(rule: ValidationRule, values: dict[Key, Decimal]) -> dict | None:
    """The violation of ``rule`` by ``values`` (one unit and period), or None.

    Missing values follow the rule's strategy, on each side as DHIS2 applies it:
    SKIP_IF_ANY_VALUE_MISSING skips when any reference has no value,
    SKIP_IF_ALL_VALUES_MISSING when a side's references have none (a side of numbers
    alone is never missing: "vaccinated <= population" waits for the population, where
    counting it as 0 rejected every village that sent its vaccinations first), NEVER_SKIP
    counts a missing value as 0. A side that divides by zero can't be judged: the rule is
    skipped, never a crash.
    """
    left, right = _parsed(rule.left), _parsed(rule.right)
    probe_l = expressions.evaluate(left, values)
    probe_r = expressions.evaluate(right, values)
    missing = probe_l.missing + probe_r.missing
    strategy = rule.missing_value_strategy
    if strategy == "SKIP_IF_ANY_VALUE_MISSING" and missing > 0:
        return None
    if strategy == "SKIP_IF_ALL_VALUES_MISSING" and any(
            side.refs > 0 and side.missing == side.refs for side in (probe_l, probe_r)):
        return None
    if missing:  # not skipped: a missing value counts as zero
        probe_l = expressions.evaluate(left, values, missing_as_zero=True)
        probe_r = expressions.evaluate(right, values, missing_as_zero=True)
    lv, rv = probe_l.value, probe_r.value
    if lv is None or rv is None:  # division by zero, or beyond a double: the rule cannot be judged
        return None
    if expressions.OPERATORS[rule.operator](lv, rv):
        return None
    return {"rule": rule.code, "name": rule.name, "name_lo": rule.name_lo, "importance": rule.importance,
            "left": float(lv), "operator": rule.operator, "right": float(rv),
            "message": f"{rule.name}: {rule.left} ({expressions.plain(lv)}) {expressions.SYMBOLS[rule.operator]} {rule.right} "
                       f"({expressions.plain(rv)}) does not hold"}


def _type_violation(v: dict, rule: str, operator: str, message: str) -> dict:
    return {"rule": rule, "importance": "HIGH", "left": None, "operator": operator, "right": None,
            "org_unit": v["org_unit"], "period": v["period"], "data_element": v["data_element"],
            "category_option_combo": v["category_option_combo"], "message": message}


def check_values(ds: DataSet, values: list[dict], md: Metadata) -> tuple[list[dict], dict[Place, dict]]:
    """Violations (HIGH) of what intake checked, judged again by the metadata now, and this
    return's numbers by place (None: deleted). A return received while an import changed the
    metadata was checked by intake against the metadata before: an element taken out of the
    data set, a value type narrowed, a combo removed or the period type changed in the same
    moment (the registry's "on their way" question missed it, not yet stored) would store a
    value no return could correct or delete."""
    violations, places = [], {}
    for v in values:
        de = md.data_elements.get(v["data_element"])
        place = places.setdefault((v["org_unit"], v["period"]), {})
        if de is None or de.code not in ds.data_elements:
            violations.append(_type_violation(v, "DATA_ELEMENT", "in",
                                              f"data element {v['data_element']!r} is not in data set {ds.code!r}"))
            continue
        if v["category_option_combo"] not in de.combos:
            violations.append(_type_violation(v, "CATEGORY_OPTION_COMBO", "in",
                                              f"{de.code} has no category option combo "
                                              f"{v['category_option_combo']!r} (one of {', '.join(de.combos)})"))
            continue
        if _period_type(v["period"]) != ds.period_type:
            violations.append(_type_violation(v, "PERIOD_TYPE", ds.period_type,
                                              f"period {v['period']!r} is not {ds.period_type}, the period type "
                                              f"of data set {ds.code!r}"))
            continue
        try:
            text = normalise(de.value_type, v["value"])
        except ValueTypeError as exc:
            violations.append(_type_violation(v, "VALUE_TYPE", de.value_type, f"{de.code}: {exc}"))
            continue
        if text == "":
            place[(de.code, v["category_option_combo"])] = None
            continue
        number = numeric(de.value_type, text)
        if number is not None:
            place[(de.code, v["category_option_combo"])] = number
    return violations, places


@lru_cache(maxsize=4096)
def _period_type(code: str) -> str | None:
    try:
        return Period.parse(code).type
    except PeriodError:
        return None


def merged(sent: dict[Key, Decimal | None], stored: dict[Key, tuple[Decimal | None, int]]) -> dict[Key, Decimal]:
    """The place's values as this return makes them: stored values it doesn't carry stay, and
    its own win, even over a *later* return's (one validated first, by another instance or
    batch). A return is judged on what it says: when the later one's value hid its own,
    whether it was rejected depended on the order validation happened to see the two in;
    an older return with a HIGH violation was accepted (and its other values aggregated)
    in 18 of 480 races. Aggregation still keeps the later value (by seq)."""
    out = {k: v for k, (v, _) in stored.items() if v is not None}
    for key, v in sent.items():
        if v is None:
            out.pop(key, None)
        else:
            out[key] = v
    return out


def expected_range(past: list[Decimal]) -> tuple[Decimal, Decimal] | None:
    """median +- 3.5 robust standard deviations of the unit's previous periods (None: too few)."""
    if len(past) < MIN_HISTORY:
        return None
    m = statistics.median(past)
    deviations = [abs(x - m) for x in past]
    spread = MAD_TO_SD * statistics.median(deviations)
    if spread == 0:  # more than half the past equal: the mean deviation still sees the rest
        spread = MEAN_AD_TO_SD * sum(deviations) / len(deviations)
    half = max(Z_LIMIT * spread, MIN_RELATIVE_WIDTH * abs(m))
    return m - half, m + half


def outliers(ds: DataSet, places: dict[Place, dict], md: Metadata, stored: Stored) -> list[dict]:
    """LOW warnings for values outside their expected range.

    An element's own ``outliers.min``/``max`` are the range when set; otherwise
    the robust z-score range of the same unit's previous periods (of the same
    period type). ``outliers.enabled: false`` switches both off for an element.
    """
    found = []
    for (org_unit, period), sent in places.items():
        for (de_code, combo), x in sent.items():
            de = md.data_elements.get(de_code)
            if x is None or de is None or de.value_type in ("BOOLEAN", "TEXT"):
                continue
            settings = de.outliers or {}
            if settings.get("enabled", True) is False:
                continue
            lo, hi, source = settings.get("min"), settings.get("max"), "min-max"
            lo = None if lo is None else Decimal(str(lo))
            hi = None if hi is None else Decimal(str(hi))
            if lo is None and hi is None:
                rng = expected_range(stored.history.get((org_unit, de_code, combo, period), []))
                if rng is None:
                    continue
                (lo, hi), source = rng, "history"
            if lo is not None and x < lo:
                operator, bound = "greater_than_or_equal_to", lo
            elif hi is not None and x > hi:
                operator, bound = "less_than_or_equal_to", hi
            else:
                continue
            shown = f"{expressions.plain(lo) if lo is not None else '…'} – {expressions.plain(hi) if hi is not None else '…'}"
            found.append({
                "rule": "OUTLIER", "name": "Outlier", "name_lo": "ຄ່າຜິດປົກກະຕິ", "importance": "LOW",
                "left": float(x), "operator": operator, "right": float(bound),
                "org_unit": org_unit, "period": period, "data_element": de_code,
                "category_option_combo": combo,
                "expected_min": None if lo is None else float(lo), "expected_max": None if hi is None else float(hi),
                "message": f"{de_code}.{combo} = {expressions.plain(x)} is outside the expected range {shown} "
                           f"({'set on the data element' if source == 'min-max' else 'from the unit’s previous periods'})"})
    return found


def check_return(data_set: str, values: list[dict], md: Metadata, stored: Stored | None = None,
                 checked: tuple[list[dict], dict[Place, dict]] | None = None) -> list[dict]:
    """Every violation of a return, sorted HIGH first. ``checked``: what ``check_values``
    already found for these values (the caller needed the places first), not done again."""
    ds = md.data_sets.get(data_set)
    if ds is None:
        return [{"rule": "DATA_SET", "importance": "HIGH", "left": None, "operator": "exists", "right": None,
                 "org_unit": "", "period": "", "message": f"unknown data set {data_set!r}"}]
    stored = stored or Stored.empty()
    violations, places = checked if checked is not None else check_values(ds, values, md)
    violations = list(violations)
    rules = rules_for(md, ds)
    for place, sent in sorted(places.items()):
        view = with_totals(merged(sent, stored.values.get(place, {})))
        for rule in rules:
            found = evaluate_rule(rule, view)
            if found:
                violations.append({**found, "org_unit": place[0], "period": place[1]})
    violations += outliers(ds, places, md, stored)
    return sorted(violations, key=lambda v: (ORDER[v["importance"]], v["rule"], v["org_unit"], v["period"],
                                             v.get("data_element") or "", v.get("category_option_combo") or ""))


def rejected(violations: list[dict]) -> bool:
    return any(v["importance"] == "HIGH" for v in violations)


def numbers_to_store(places: dict[Place, dict]) -> list[tuple[Place, str, str, str | None]]:
    """(place, element, combo, value) for ``accepted_value``: every numeric value of an
    accepted return, None for a deletion."""
    return [(place, de, combo, None if v is None else str(v))
            for place, sent in places.items() for (de, combo), v in sent.items()]
