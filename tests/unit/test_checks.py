"""Validation policy and rules, without a database."""
from services.validation.checks import check_return, evaluate_rule, rejected
from tests.support.metadata import data_set, element, rule, snapshot
from decimal import Decimal as D

MD = snapshot({"LA": None, "V": "LA"},
              elements=[element("POP", combos=("M", "F")), element("HH")],
              data_sets=[data_set("DS", ["POP", "HH"], level=2)],
              rules=[rule("HIGH1", "#{POP.M} + #{POP.F}", "greater_than", "0", strategy="NEVER_SKIP",
                          data_set="DS"),
                     rule("MED1", "#{HH}", "less_than_or_equal_to", "#{POP}", importance="MEDIUM",
                          strategy="SKIP_IF_ANY_VALUE_MISSING", data_set="DS")])


def values(**kv):
    out = []
    for key, v in kv.items():
        de, _, coc = key.partition("_")
        out.append({"data_element": de, "category_option_combo": coc or "default", "org_unit": "V",
                    "period": "2025", "value": str(v)})
    return out


def test_high_rejects_medium_warns():
    high = check_return("DS", values(POP_M=0, POP_F=0), MD)
    assert [v["rule"] for v in high] == ["HIGH1"] and rejected(high)
    medium = check_return("DS", values(POP_M=2, POP_F=3, HH=9), MD)
    assert [(v["rule"], v["importance"]) for v in medium] == [("MED1", "MEDIUM")] and not rejected(medium)
    assert medium[0]["left"] == 9 and medium[0]["right"] == 5
    assert check_return("DS", values(POP_M=2, POP_F=3, HH=1), MD) == []


def test_value_type_is_checked_again():
    found = check_return("DS", values(POP_M="x", POP_F=1), MD)
    assert found[0]["rule"] == "VALUE_TYPE" and rejected(found)


def test_a_combo_removed_or_a_period_type_changed_since_intake_rejects_the_return():
    """A return received in the moment an import removed a combo or changed the data set's
    period type: intake checked it against the metadata before, and its value was stored where
    no return could correct or delete it (a probe's HIGH, 4 races of 4)."""
    found = check_return("DS", values(POP_X=1, POP_M=1, HH=1), MD)
    assert [(v["rule"], v["category_option_combo"]) for v in found] == [("CATEGORY_OPTION_COMBO", "X")]
    assert rejected(found) and "one of M, F" in found[0]["message"]
    monthly = snapshot({"LA": None, "V": "LA"}, elements=[element("POP", combos=("M", "F"))],
                       data_sets=[data_set("DS", ["POP"], period_type="Monthly", level=2)])
    found = check_return("DS", values(POP_M=1), monthly)
    assert [(v["rule"], v["period"]) for v in found] == [("PERIOD_TYPE", "2025")] and rejected(found)


def test_division_by_zero_skips_the_rule():
    r = rule("DIV", "#{HH} / #{POP}", "less_than", "1", strategy="NEVER_SKIP")
    assert evaluate_rule(r, {("HH", "default"): D(5), ("POP", "M"): D(0)}) is None


def test_a_data_sets_rule_about_none_of_its_elements_does_not_judge_its_returns():
    """The data set dropped POP since the rule was made: the rule, about POP alone, saw only
    missing values and with NEVER_SKIP rejected every return (DHIS2 picks a data set's rules
    by the elements they share with it)."""
    md = snapshot({"LA": None, "V": "LA"}, elements=[element("POP", combos=("M", "F")), element("HH")],
                  data_sets=[data_set("DS", ["HH"], level=2)],
                  rules=[rule("HIGH1", "#{POP.M} + #{POP.F}", "greater_than", "0", strategy="NEVER_SKIP",
                              data_set="DS"),
                         rule("HH1", "#{HH}", "greater_than", "#{POP}", strategy="NEVER_SKIP", data_set="DS")])
    assert [v["rule"] for v in check_return("DS", values(HH=0), md)] == ["HH1"]
    assert check_return("DS", values(HH=4), md) == []
