"""Validation rules case by case (each operator, each missing-value strategy, each
importance), the merged view, outliers, and property-based tests of the expression
engine. Pure functions: no database."""
from __future__ import annotations

import operator
from decimal import Decimal as D
from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.validation.checks import (Stored, check_return, evaluate_rule, expected_range, rejected,
                                        rules_for, with_totals)
from shared import expressions
from tests.support.metadata import data_set, element, rule, snapshot

OPS = {"equal_to": operator.eq, "not_equal_to": operator.ne, "greater_than": operator.gt,
       "greater_than_or_equal_to": operator.ge, "less_than": operator.lt, "less_than_or_equal_to": operator.le}


# ------------------------------------------------------------------ operators

@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("left, right", [(3, 5), (5, 5), (7, 5)])
def test_each_operator_holds_or_is_violated_exactly_as_named(op, left, right):
    r = rule("R", "#{A}", op, "#{B}", strategy="NEVER_SKIP")
    found = evaluate_rule(r, {("A", "default"): D(left), ("B", "default"): D(right)})
    assert (found is None) == OPS[op](left, right)
    if found:
        assert (found["left"], found["operator"], found["right"]) == (left, op, right)


# ------------------------------------------------------------------ missing values

CASES = {  # values present -> (SKIP_IF_ANY, SKIP_IF_ALL, NEVER_SKIP): is the rule judged?
    "both": ({"A": 1, "B": 2}, (True, True, True)),
    "one": ({"A": 1}, (False, True, True)),
    "none": ({}, (False, False, True)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("i, strategy", list(enumerate(["SKIP_IF_ANY_VALUE_MISSING", "SKIP_IF_ALL_VALUES_MISSING",
                                                   "NEVER_SKIP"])))
def test_each_missing_value_strategy(case, i, strategy):
    present, judged = CASES[case]
    values = {(k, "default"): D(v) for k, v in present.items()}
    # A + B = 100 is false for every set of values here: judged means violated
    found = evaluate_rule(rule("R", "#{A} + #{B}", "equal_to", "100", strategy=strategy), values)
    assert (found is not None) == judged[i]
    if found:  # NEVER_SKIP: a missing value counts as zero
        assert found["left"] == sum(present.values())


@pytest.mark.parametrize("present, judged", [
    ({"A": 5, "B": 1}, True),    # both sides hold a value: judged (5 <= 1 is violated)
    ({"A": 5}, False),           # the right side's one reference missing: not judged
    ({"B": -1}, False),          # the left side's: not judged (it was "0 <= -1", a violation)
    ({"A": 5, "C": 1}, True),    # a side with one of its references present is judged, the other as 0
])
def test_skip_if_all_values_missing_is_judged_side_by_side_as_dhis2_does(present, judged):
    """DHIS2 applies the strategy to each side: "vaccinated <= population" waits for the
    population. Over the whole rule, a village that sent its vaccinations first was rejected
    ("5 <= 0")."""
    values = {(k, "default"): D(v) for k, v in present.items()}
    r = rule("R", "#{A}", "less_than_or_equal_to", "#{B} + #{C}", strategy="SKIP_IF_ALL_VALUES_MISSING")
    assert (evaluate_rule(r, values) is not None) == judged


def test_a_rule_with_only_numbers_is_always_judged():
    assert evaluate_rule(rule("R", "1", "greater_than", "2", strategy="SKIP_IF_ALL_VALUES_MISSING"), {})


@pytest.mark.parametrize("left", ["#{A} / #{B}", "#{A} / (#{B} - #{B})", "1 / 0"])
def test_division_by_zero_skips_the_rule_for_every_strategy(left):
    for strategy in ("SKIP_IF_ANY_VALUE_MISSING", "SKIP_IF_ALL_VALUES_MISSING", "NEVER_SKIP"):
        r = rule("R", left, "less_than", "-1", strategy=strategy)
        assert evaluate_rule(r, {("A", "default"): D(4), ("B", "default"): D(0)}) is None


@pytest.mark.parametrize("a", [1, 2, 7, 10, 11, 13, 1000001])
def test_division_is_exact_so_a_ratio_times_its_divisor_is_the_value_again(a):
    # in Decimal's 28 digits 1 / 3 * 3 was 0.999...9: a HIGH rule rejected the return
    # and its violation read "1 = 1"
    r = rule("R", "#{A} / 3 * 3", "equal_to", "#{A}", strategy="SKIP_IF_ANY_VALUE_MISSING")
    assert evaluate_rule(r, {("A", "default"): D(a)}) is None
    share = rule("S", "#{A} / #{B} * 100", "less_than_or_equal_to", "100 / 3", strategy="NEVER_SKIP")
    assert evaluate_rule(share, {("A", "default"): D(a), ("B", "default"): D(3 * a)}) is None


def test_a_violation_shows_each_side_once_as_a_plain_number():
    r = rule("third", "#{A} / 3", "greater_than", "#{A} / 2", strategy="NEVER_SKIP")
    found = evaluate_rule(r, {("A", "default"): D(1)})
    assert (found["left"], found["right"]) == (1 / 3, 0.5)
    assert found["message"] == "third: #{A} / 3 (0.333333333333333) > #{A} / 2 (0.5) does not hold"


@pytest.mark.parametrize("x, shown", [(F(12), "12"), (F(-5, 2), "-2.5"), (F(1, 3), "0.333333333333333"),
                                      (F(1, 2 ** 40), format(D(1) / D(2 ** 40), "f")), (F(10 ** 30), "1" + "0" * 30),
                                      (D("12.50"), "12.50"), (D("1E+2"), "100")])
def test_plain_numbers_are_exact_where_they_end_and_cut_at_15_digits_where_not(x, shown):
    assert expressions.plain(x) == shown


@pytest.mark.parametrize("text", ["#{A} * 1e400", "1e301", "1E+999999999", "1e-301", "#{A} - 0.0000001e-300"])
def test_a_number_beyond_a_double_is_refused_when_the_rule_is_imported(text):
    # 1e400 was accepted; evaluated, the violation's side was infinity, which JSON can't hold:
    # every return of the data set was dead-lettered, never judged
    with pytest.raises(expressions.ExpressionError, match="out of range"):
        expressions.parse(text)
    for fine in ("1e300", "1e-300", "0e999", "0.0"):
        expressions.parse(fine)


def test_a_rule_stored_before_the_limit_is_left_out_not_a_failure_of_every_return():
    ds = data_set("DS", ["A"])
    md = snapshot({"LA": None}, elements=[element("A")], data_sets=[ds],
                  rules=[rule("OLD", "#{A} * 1e400", "less_than", "0", data_set="DS"),
                         rule("NEW", "#{A}", "less_than", "0", data_set="DS")])
    assert [r.code for r in rules_for(md, md.data_sets["DS"])] == ["NEW"]


def test_a_side_beyond_a_double_cannot_be_judged_and_the_rule_is_skipped():
    r = rule("R", "#{A} * 1e300 * 1e300", "less_than", "0", strategy="NEVER_SKIP", importance="HIGH")
    assert evaluate_rule(r, {("A", "default"): D(1)}) is None
    assert evaluate_rule(r, {("A", "default"): D(0)})["left"] == 0  # within range: judged (0 < 0 fails)


def test_a_total_reference_sums_the_combos_present():
    values = {("POP", "M"): D(2), ("POP", "F"): D(3)}
    r = rule("R", "#{POP}", "equal_to", "#{POP.M} + #{POP.F} + 1", strategy="SKIP_IF_ANY_VALUE_MISSING")
    assert evaluate_rule(r, values)["left"] == 5
    assert evaluate_rule(r, with_totals(values))["left"] == 5  # the precomputed total reads the same


# ------------------------------------------------------------------ importance and policy

MD = snapshot({"LA": None, "V": "LA"},
              elements=[element("POP", combos=("M", "F")), element("HH"), element("T", value_type="TEXT")],
              data_sets=[data_set("DS", ["POP", "HH", "T"], level=2)],
              rules=[rule(f"R_{imp}", "#{HH}", "less_than_or_equal_to", "#{POP}", importance=imp,
                          strategy="SKIP_IF_ANY_VALUE_MISSING", data_set="DS") for imp in ("HIGH", "MEDIUM", "LOW")])


def values(period="2025", **kv):
    out = []
    for key, v in kv.items():
        de, _, coc = key.partition("_")
        out.append({"data_element": de, "category_option_combo": coc or "default", "org_unit": "V",
                    "period": period, "value": str(v)})
    return out


def test_high_rejects_medium_and_low_are_warnings_sorted_high_first():
    found = check_return("DS", values(POP_M=1, POP_F=1, HH=9), MD)
    assert [(v["rule"], v["importance"]) for v in found] == [("R_HIGH", "HIGH"), ("R_MEDIUM", "MEDIUM"),
                                                             ("R_LOW", "LOW")]
    assert rejected(found)
    assert not rejected([v for v in found if v["importance"] != "HIGH"])
    assert found[0]["name"] == "R_HIGH" and "≤" in found[0]["message"]


def test_a_wrong_type_is_a_high_violation_naming_the_value():
    found = check_return("DS", values(POP_M="many", POP_F=1), MD)
    assert found[0]["rule"] == "VALUE_TYPE" and found[0]["data_element"] == "POP" and rejected(found)


# ------------------------------------------------------------------ the merged view

def test_rules_see_values_accepted_before_for_the_same_place():
    stored = Stored({("V", "2025"): {("POP", "M"): (D(2), 1), ("POP", "F"): (D(3), 1)}}, {})
    # households alone: 9 > 5 people already stored
    found = check_return("DS", values(HH=9), MD, stored)
    assert [v["rule"] for v in found] == ["R_HIGH", "R_MEDIUM", "R_LOW"]
    assert found[0]["right"] == 5
    # a deletion takes the stored value out of the view: the rule is skipped (ANY missing)
    assert check_return("DS", values(HH=9, POP_M="", POP_F=""), MD, stored) == []
    # a return is judged on its own values, also where a *later* return (validated first)
    # stored another: whether it is rejected can't depend on the order the two were seen in
    later = Stored({("V", "2025"): {("POP", "M"): (D(20), 9), ("POP", "F"): (D(20), 9)}}, {})
    assert check_return("DS", values(HH=9, POP_M=1), MD, later) == \
        check_return("DS", values(HH=9, POP_M=1), MD, Stored({("V", "2025"): {("POP", "F"): (D(20), 1)}}, {}))
    assert [v["rule"] for v in check_return("DS", values(HH=30, POP_M=1), MD, later)][:1] == ["R_HIGH"]


# ------------------------------------------------------------------ outliers

OUT_MD = snapshot({"LA": None, "V": "LA"},
                  elements=[element("CASES"), element("PRICE", value_type="NUMBER"), element("OFF")],
                  data_sets=[data_set("M", ["CASES", "PRICE", "OFF"], period_type="Monthly", level=2)])
OUT_MD.data_elements["PRICE"].outliers.update({"min": "1000", "max": "50000"})
OUT_MD.data_elements["OFF"].outliers.update({"enabled": False})
HISTORY = [D(x) for x in (10, 12, 11, 9, 13, 10, 11, 12)]


def test_expected_range_is_median_plus_minus_robust_deviations():
    lo, hi = expected_range(HISTORY)
    assert lo < 9 and hi > 13 and lo > 0 and hi < 20
    assert expected_range(HISTORY[:3]) is None          # too little history
    assert expected_range([D(100)] * 6) == (D(90), D(110))  # never narrower than +-10%


def test_outliers_are_low_warnings_with_the_expected_range():
    stored = Stored({}, {("V", "CASES", "default", "202611"): HISTORY, ("V", "OFF", "default", "202611"): HISTORY})
    found = check_return("M", values("202611", CASES=95, PRICE=60000, OFF=95), OUT_MD, stored)
    by = {v["data_element"]: v for v in found}
    assert set(by) == {"CASES", "PRICE"}                 # OFF has outlier checks switched off
    assert all(v["importance"] == "LOW" and v["rule"] == "OUTLIER" for v in found) and not rejected(found)
    assert by["PRICE"]["expected_max"] == 50000 and by["PRICE"]["right"] == 50000
    assert by["CASES"]["left"] == 95 and by["CASES"]["expected_max"] < 20
    assert check_return("M", values("202611", CASES=12, PRICE=20000), OUT_MD, stored) == []
    # a low price is as suspicious as a high one
    assert check_return("M", values("202611", PRICE=5), OUT_MD, stored)[0]["operator"] == \
        "greater_than_or_equal_to"


# ------------------------------------------------------------------ the expression engine

codes = st.sampled_from(["A", "B", "C"])


@st.composite
def trees(draw, depth=0):
    """(expression text, its value by Python's own exact rational arithmetic) or None if undefined."""
    if depth > 3 or draw(st.booleans()):
        if draw(st.booleans()):
            n = draw(st.integers(0, 1000))
            return str(n), F(n)
        code = draw(codes)
        return f"#{{{code}}}", ENV[code]
    op = draw(st.sampled_from("+-*/"))
    (lt, lv), (rt, rv) = draw(trees(depth + 1)), draw(trees(depth + 1))
    if lv is None or rv is None or (op == "/" and rv == 0):
        value = None
    else:
        value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if op == "/" and rv else None}[op]
    return f"({lt} {op} {rt})", value


ENV = {"A": F(7), "B": F(0), "C": F(-3)}
VALUES = {(k, "default"): D(v.numerator) for k, v in ENV.items()}


@settings(max_examples=300, deadline=None)
@given(trees())
def test_evaluation_matches_exact_arithmetic_and_never_raises(tree):
    text, expected = tree
    got = expressions.evaluate(expressions.parse(text), VALUES).value
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="#{}().+-*/ 0123456789ABx.eE", max_size=40))
def test_the_parser_refuses_or_parses_but_never_crashes(text):
    try:
        node = expressions.parse(text)
    except expressions.ExpressionError:
        return
    expressions.evaluate(node, VALUES)  # whatever parsed can be evaluated


@settings(max_examples=200, deadline=None)
@given(st.integers(-999, 999), st.integers(-999, 999), st.integers(-999, 999))
def test_precedence_and_unary_minus_follow_arithmetic(a, b, c):
    text = f"-{a} - {b} * -{c} + -(-{a})".replace("--", "- -")
    assert expressions.evaluate(expressions.parse(text), {}).value == D(-a - b * -c + a)


@pytest.mark.parametrize("bad", ["#{A", "1 +", "(1", "1)", "#{a b}", "eval('1')", "1 ** 2", "#{A.B.C}", ""])
def test_bad_expressions_are_refused_with_a_reason(bad):
    with pytest.raises(expressions.ExpressionError):
        expressions.parse(bad)


def test_a_rule_follows_its_elements_into_every_data_set_of_its_period_type():
    """Attached to its own form only, a HIGH rule let the same values in through another
    form of the unit (a probe: A1 = B1 = 0 accepted by a second monthly data set), and then
    rejected a later return of its own form that sent neither (the merged view held them)."""
    own, other = data_set("OWN", ["A", "B", "X"], "Monthly"), data_set("MIX", ["A", "B", "C"], "Monthly")
    yearly = data_set("YEAR", ["A", "P"], "Yearly")
    md = snapshot({"LA": None}, elements=[element(e) for e in "ABCPX"], data_sets=[own, other, yearly],
                  rules=[rule("R1", "#{A} + #{B}", "greater_than", "0", data_set="OWN"),
                         rule("RY", "#{A}", "less_than_or_equal_to", "#{P}", data_set="YEAR",
                              strategy="NEVER_SKIP"),
                         rule("RX", "#{X}", "greater_than", "0", data_set="OWN"),
                         rule("FREE", "#{C}", "greater_than", "0")])
    assert [r.code for r in rules_for(md, md.data_sets["MIX"])] == ["FREE", "R1"]
    assert [r.code for r in rules_for(md, md.data_sets["OWN"])] == ["R1", "RX"]
    # a year's rule stays off the months: with NEVER_SKIP, a month's A against no P failed
    assert [r.code for r in rules_for(md, md.data_sets["YEAR"])] == ["RY"]
    violations = check_return("MIX", [{"data_element": d, "category_option_combo": "default",
                                       "org_unit": "LA", "period": "202501", "value": "0"} for d in "AB"], md)
    assert [v["rule"] for v in violations] == ["R1"] and rejected(violations)


@pytest.mark.parametrize("text, says", [
    ("#{ພົນ.ຊາຍ} + 1", "'#{ພົນ.ຊາຍ}' at position 1 is not a reference #{CODE} or #{CODE.COMBO}: codes are 1-50 Latin"),
    ("#{POP} + #{A B}", "'#{A B}' at position 10 is not a reference"),
    ("#{POP} + ໕", "'໕' at position 10 is not a number: numbers are written in digits 0-9"),
    ("#{POP} * 1,5", "',5' at position 11 is not a number"),
    ("#{POP} % 2", "unexpected '% 2' at position 8"),
])
def test_an_expression_that_cannot_be_read_says_what_is_wrong_where(text, says):
    """A code in Lao script or a Lao digit was "unexpected '#{ພົນ.ຊາຍ} + ໕' at position 1":
    the message now says which rule of the syntax the text breaks."""
    with pytest.raises(expressions.ExpressionError) as exc:
        expressions.parse(text)
    assert str(exc.value).startswith(says), str(exc.value)
