"""Metadata import planning, without a database."""
import datetime as dt

import pytest

from services.registry.hierarchy import FAR_PAST, Link
from services.registry.importer import ImportRefused, Registry, plan

TODAY = dt.date(2026, 11, 24)


def empty() -> Registry:
    return Registry(0, {}, {}, {}, {}, {}, {})


BASE = {
    "orgUnits": [{"code": "LA", "name": "Lao PDR", "openingDate": "1975-12-02"},
                 {"code": "03", "name": "Luang Namtha", "nameLo": "ຫຼວງນ້ຳທາ", "parent": "LA",
                  "openingDate": "1990-01-01"}],
    "dataElements": [{"code": "POP", "name": "Population", "valueType": "INTEGER", "aggregationType": "SUM",
                      "disaggregation": ["M", "F"]}],
    "dataSets": [{"code": "DS", "name": "Return", "periodType": "Yearly", "dataElements": ["POP"],
                  "orgUnitLevel": 2}],
    "validationRules": [{"code": "R", "name": "Rule", "importance": "HIGH", "left": "#{POP.M} + #{POP.F}",
                         "operator": "greater_than", "right": "0"}],
    "focalPoints": [{"code": "FP", "name": "ສົມສັກ", "orgUnit": "03", "role": "supervisor",
                     "email": "a@b.la", "language": "lo"}],
}


def test_a_clean_document_plans_every_object():
    p = plan(BASE, empty(), {}, TODAY)
    assert (p.created, p.updated, p.ignored) == (6, 0, 0)
    assert [x.path for x in p.paths["03"]] == ["/LA/03/"]
    assert p.validation_rules["R"]["missing_value_strategy"] == "SKIP_IF_ALL_VALUES_MISSING"
    assert p.data_elements["POP"]["combos"] == ["M", "F"]


def errors_of(doc, reg=None) -> list[dict]:
    with pytest.raises(ImportRefused) as err:
        plan(doc, reg or empty(), {}, TODAY)
    return err.value.errors


def test_every_error_is_listed_not_just_the_first():
    doc = {
        "orgUnits": [{"code": "X1", "name": "x", "parent": "NOWHERE", "openingDate": "2000-01-01"},
                     {"code": "X2", "name": "y", "openingDate": "2000-01-01"},
                     {"code": "X2", "name": "dup", "openingDate": "2000-01-01"}],
        "dataElements": [{"code": "E", "name": "e", "valueType": "MONEY", "aggregationType": "SUM"}],
        "dataSets": [{"code": "S", "name": "s", "periodType": "Monthly", "dataElements": ["NOPE"]}],
        "validationRules": [{"code": "R", "name": "r", "importance": "HIGH", "left": "#{POP.M} +",
                             "operator": "equal_to", "right": "1"}],
    }
    errors = errors_of(doc)
    text = " | ".join(e["message"] for e in errors)
    assert "unknown parent 'NOWHERE'" in text
    assert "duplicate code 'X2'" in text
    assert "valueType" in text and "MONEY" in text
    assert "unknown data element 'NOPE'" in text
    assert "bad left expression" in text
    assert all(e["object"] in ("X1", "X2", "E", "S", "R") for e in errors)


def test_rule_references_must_exist_with_their_combos():
    doc = {**BASE, "validationRules": [{"code": "R", "name": "r", "importance": "LOW", "left": "#{POP.X}",
                                        "operator": "equal_to", "right": "#{GHOST}"}]}
    text = " | ".join(e["message"] for e in errors_of(doc))
    assert "POP.X" in text and "GHOST" in text


def test_a_rule_of_a_data_set_is_about_one_of_its_elements():
    """A rule that names a data set and none of its elements could only see missing values
    (with NEVER_SKIP, it rejected every return of the data set)."""
    doc = {**BASE, "dataElements": BASE["dataElements"] + [
        {"code": "HH", "name": "Households", "valueType": "INTEGER", "aggregationType": "SUM"}],
           "validationRules": [{"code": "R", "name": "r", "importance": "HIGH", "left": "#{HH} + #{HH}",
                                "operator": "greater_than", "right": "0", "dataSet": "DS",
                                "missingValueStrategy": "NEVER_SKIP"}]}
    [error] = errors_of(doc)  # told once, though HH is named twice
    assert error["object"] == "R" and "refers to no data element of data set 'DS' (HH; it has POP)" in error["message"]
    ok = {**doc, "validationRules": [{**doc["validationRules"][0], "left": "#{HH} + #{POP}"}]}
    assert plan(ok, empty(), {}, TODAY).validation_rules["R"]["data_set"] == "DS"


def test_a_data_set_cannot_drop_every_element_a_rule_of_it_is_about():
    """The data set changed alone, the rule left as it was: it judged nothing after, and the
    registry's own export was refused on import ("refers to no data element of data set")."""
    doc = {**BASE, "dataElements": BASE["dataElements"] + [
        {"code": "HH", "name": "Households", "valueType": "INTEGER", "aggregationType": "SUM"}],
           "dataSets": [{**BASE["dataSets"][0], "dataElements": ["POP", "HH"]}],
           "validationRules": [{**BASE["validationRules"][0], "dataSet": "DS"}]}
    reg, paths = _registry(doc)
    with pytest.raises(ImportRefused) as err:
        plan({"dataSets": [{"code": "DS", "dataElements": ["HH"]}]}, reg, paths, TODAY)
    [error] = err.value.errors
    assert error["object"] == "DS" and error["message"].startswith(
        "data set DS: validation rule R refers to POP, none of which it would still have"), error
    # an element the rule is not about may go; and the rule changed with it in one document
    assert plan({"dataSets": [{"code": "DS", "dataElements": ["POP"]}]}, reg, paths, TODAY).data_sets["DS"]
    both = plan({"dataSets": [{"code": "DS", "dataElements": ["HH"]}],
                 "validationRules": [{"code": "R", "left": "#{HH}"}]}, reg, paths, TODAY)
    assert both.validation_rules["R"]["left"] == "#{HH}"


def test_an_expression_problem_is_told_once():
    doc = {**BASE, "validationRules": [{"code": "R", "name": "r", "importance": "LOW", "left": "#{GHOST} + #{GHOST}",
                                        "operator": "equal_to", "right": "1"}]}
    assert [e["message"] for e in errors_of(doc)] == ["validation rule R: left expression refers to unknown "
                                                      "data element 'GHOST'"]


def test_a_cycle_is_refused():
    doc = {"orgUnits": [{"code": "A", "name": "a", "parent": "B", "openingDate": "2000-01-01"},
                        {"code": "B", "name": "b", "parent": "A", "openingDate": "2000-01-01"}]}
    assert any("cycle in the hierarchy" in e["message"] for e in errors_of(doc))


def _registry(doc) -> tuple[Registry, dict]:
    first = plan(doc, empty(), {}, TODAY)
    return Registry(1, first.org_units, first.links, first.data_elements, first.data_sets,
                    first.validation_rules, first.focal_points), first.paths


def test_every_cycle_of_a_document_is_told_at_once():
    doc = {"orgUnits": [{"code": "A", "name": "a", "parent": "B", "openingDate": "2000-01-01"},
                        {"code": "B", "name": "b", "parent": "A", "openingDate": "2000-01-01"},
                        {"code": "C", "name": "c", "parent": "D", "openingDate": "2000-01-01"},
                        {"code": "D", "name": "d", "parent": "E", "openingDate": "2000-01-01"},
                        {"code": "E", "name": "e", "parent": "C", "openingDate": "2000-01-01"}]}
    cycles = sorted(e["message"] for e in errors_of(doc) if "cycle" in e["message"])
    assert len(cycles) == 2 and any("A" in c and "B" in c for c in cycles) and \
        any("C" in c and "D" in c and "E" in c for c in cycles), cycles


def test_a_cycle_is_named_after_the_unit_the_document_moves():
    reg, paths = _registry({"orgUnits": BASE["orgUnits"] + [
        {"code": "D", "name": "District", "parent": "03", "openingDate": "2000-01-01"},
        {"code": "V", "name": "Village", "parent": "D", "openingDate": "2000-01-01"}]})
    with pytest.raises(ImportRefused) as err:
        plan({"orgUnits": [{"code": "D", "parent": "V", "parentFrom": "2026-08-01"}]}, reg, paths, TODAY)
    [error] = err.value.errors
    assert error["object"] == "D"
    assert error["message"] == "cycle in the hierarchy from 2026-08-01: D -> V -> D"


def test_a_move_onto_a_unit_that_has_left_is_no_cycle():
    # V leaves D for 03 in July; D goes under V from August
    reg, paths = _registry({"orgUnits": BASE["orgUnits"] + [
        {"code": "D", "name": "District", "parent": "03", "openingDate": "2000-01-01"},
        {"code": "V", "name": "Village", "parent": "D", "openingDate": "2000-01-01"}]})
    p = plan({"orgUnits": [{"code": "V", "parent": "03", "parentFrom": "2026-07-01"},
                           {"code": "D", "parent": "V", "parentFrom": "2026-08-01"}]}, reg, paths, TODAY)
    assert [x.path for x in p.paths["D"]] == ["/LA/03/D/", "/LA/03/V/D/"]


def test_a_parent_posted_without_a_date_is_compared_with_where_the_unit_is_today():
    """A move to D2 is scheduled for next year; posting parent D2 without parentFrom moves the
    unit today (it was "no change", compared with the scheduled link); posting the parent it
    has today changes nothing and keeps the schedule."""
    reg, paths = _registry({"orgUnits": BASE["orgUnits"] + [
        {"code": "D1", "name": "District 1", "parent": "03", "openingDate": "2000-01-01"},
        {"code": "D2", "name": "District 2", "parent": "03", "openingDate": "2000-01-01"},
        {"code": "V", "name": "Village", "parent": "D1", "openingDate": "2000-01-01"}]})
    scheduled = plan({"orgUnits": [{"code": "V", "parent": "D2", "parentFrom": "2027-06-01"}]}, reg, paths, TODAY)
    reg.links.update(scheduled.links)
    paths = {**paths, **scheduled.paths}
    assert plan({"orgUnits": [{"code": "V", "parent": "D1"}]}, reg, paths, TODAY).links == {}
    p = plan({"orgUnits": [{"code": "V", "parent": "D2"}]}, reg, paths, TODAY)
    assert p.links["V"] == [Link("D1", dt.date(2000, 1, 1), TODAY), Link("D2", TODAY, None)]


def test_reimporting_the_same_document_changes_nothing():
    first = plan(BASE, empty(), {}, TODAY)
    reg = Registry(1, first.org_units, first.links, first.data_elements, first.data_sets,
                   first.validation_rules, first.focal_points)
    again = plan(BASE, reg, first.paths, TODAY)
    assert not again.changed
    assert (again.created, again.updated, again.ignored) == (0, 0, 6)


def test_moving_a_unit_defaults_to_today_and_moves_its_descendants():
    doc = {"orgUnits": BASE["orgUnits"] + [
        {"code": "04", "name": "Bokeo", "parent": "LA", "openingDate": "1990-01-01"},
        {"code": "D", "name": "District", "parent": "03", "openingDate": "1990-01-01"},
        {"code": "V", "name": "Village", "parent": "D", "openingDate": "1990-01-01"}]}
    first = plan(doc, empty(), {}, TODAY)
    reg = Registry(1, first.org_units, first.links, {}, {}, {}, {})
    moved = plan({"orgUnits": [{"code": "D", "parent": "04"}]}, reg, first.paths, TODAY)
    assert moved.links["D"] == [Link("03", dt.date(1990, 1, 1), TODAY), Link("04", TODAY)]
    assert set(moved.paths) == {"D", "V"}
    assert [p.path for p in moved.paths["V"]] == ["/LA/03/D/V/", "/LA/04/D/V/"]
    assert moved.updated == 1 and "V" in moved.org_units  # V travels in the event, unchanged itself


def test_an_opening_date_corrected_earlier_takes_the_first_parent_link_with_it():
    doc = {"orgUnits": BASE["orgUnits"] + [{"code": "D", "name": "District", "parent": "03",
                                            "openingDate": "2030-03-15"}]}   # a typing mistake
    first = plan(doc, empty(), {}, TODAY)
    reg = Registry(1, first.org_units, first.links, {}, {}, {}, {})
    fixed = plan({"orgUnits": [{"code": "D", "openingDate": "2020-03-15"}]}, reg, first.paths, TODAY)
    assert fixed.links["D"] == [Link("03", dt.date(2020, 3, 15))]
    assert "D" not in fixed.paths  # its place held from the beginning already
    # a link that did not begin at the old opening (a move) is left as it was
    moved = plan({"orgUnits": [{"code": "D", "parent": "LA", "parentFrom": "2031-01-01"}]}, reg, first.paths, TODAY)
    reg = Registry(2, {**first.org_units, **moved.org_units}, {**first.links, **moved.links}, {}, {}, {}, {})
    again = plan({"orgUnits": [{"code": "D", "openingDate": "2020-03-15"}]}, reg, {**first.paths, **moved.paths},
                 TODAY)
    assert again.links["D"][0] == Link("03", dt.date(2020, 3, 15), dt.date(2031, 1, 1))


def test_a_period_type_changes_only_while_no_return_is_stored():
    first = plan(BASE, empty(), {}, TODAY)
    reg = Registry(1, first.org_units, first.links, first.data_elements, first.data_sets,
                   first.validation_rules, first.focal_points)
    monthly = {"dataSets": [{"code": "DS", "periodType": "Monthly"}]}
    asked = []
    assert plan(monthly, reg, first.paths, TODAY, with_returns=lambda codes: asked.append(codes) or []).changed
    assert asked == [["DS"]]  # asked, and nothing stored: allowed
    with pytest.raises(ImportRefused) as err:
        plan(monthly, reg, first.paths, TODAY, with_returns=lambda codes: codes)
    assert "periodType cannot change from Yearly to Monthly: returns for it are stored" in err.value.errors[0]["message"]
    # an org unit assigned twice is a mistake in the document, as an element listed twice is
    with pytest.raises(ImportRefused) as err:
        plan({"dataSets": [{"code": "DS", "orgUnits": ["03", "03"]}]}, reg, first.paths, TODAY)
    assert "an org unit is listed twice" in err.value.errors[0]["message"]
    # a change of anything else does not ask
    plan({"dataSets": [{"code": "DS", "timelyDays": 20}]}, reg, first.paths, TODAY,
         with_returns=lambda codes: pytest.fail("asked"))


def test_a_default_importance_is_medium_as_in_dhis2():
    doc = {**BASE, "validationRules": [{"code": "R", "name": "r", "left": "#{POP}", "operator": "greater_than",
                                        "right": "0"}]}
    assert plan(doc, empty(), {}, TODAY).validation_rules["R"]["importance"] == "MEDIUM"


def test_rules_left_alone_must_still_hold_for_a_changed_data_element():
    reg, paths = _registry(BASE)  # rule R reads POP.M and POP.F
    for change, expected in ((dict(BASE["dataElements"][0], disaggregation=["M"]),
                              "validation rule R's left expression refers to POP.F, but POP has combos M"),
                             (dict(BASE["dataElements"][0], valueType="TEXT"),
                              "validation rule R's left expression computes with POP, a TEXT data element")):
        with pytest.raises(ImportRefused) as err:
            plan({"dataElements": [change]}, reg, paths, TODAY)
        assert any(e["object"] == "POP" and expected in e["message"] for e in err.value.errors), err.value.errors


def test_a_change_that_would_strand_stored_values_is_refused():
    reg, paths = _registry({**BASE, "validationRules": []})
    asked = []

    def stored(question):
        asked.append(question)
        return {"POP": ["F"]}

    pop = BASE["dataElements"][0]
    with pytest.raises(ImportRefused) as err:
        plan({"dataElements": [dict(pop, disaggregation=["M", "X"])]}, reg, paths, TODAY, stored)
    assert asked == [{"POP": ["F"]}]  # only what the change would remove is asked about
    assert "category option combo 'F' cannot be removed: values of POP.F are stored" in err.value.errors[0]["message"]
    with pytest.raises(ImportRefused) as err:
        plan({"dataElements": [dict(pop, valueType="PERCENTAGE")]}, reg, paths, TODAY, stored)
    assert "valueType cannot change from INTEGER to PERCENTAGE" in err.value.errors[0]["message"]
    # widening, or combos added, ask nothing and pass
    asked.clear()
    ok = plan({"dataElements": [dict(pop, valueType="NUMBER", disaggregation=["M", "F", "X"])]},
              reg, paths, TODAY, stored)
    assert asked == [] and ok.data_elements["POP"]["value_type"] == "NUMBER"
    # nothing stored: anything goes
    assert plan({"dataElements": [dict(pop, valueType="TEXT")]}, reg, paths, TODAY, lambda q: {}).updated == 1


@pytest.mark.parametrize("address, ok", [
    ("ສົມໃຈ@example.la", True), ("ນ້ຳ@ລາວ.la", True), ("khamla.ສົມ@example.la", True), ("a@b.la", True),
    ("not-an-email", False), ("a b@c.la", False), ("a@b..la", False), ("@b.la", False),
    ("a..b@stat.la", False), (".a@stat.la", False), ("a.@stat.la", False)])
def test_focal_point_addresses_may_be_lao(address, ok):
    """Lao words carry vowel and tone marks: marshmallow's Email refused nearly all of them."""
    doc = {**BASE, "focalPoints": [dict(BASE["focalPoints"][0], email=address)]}
    if ok:
        assert plan(doc, empty(), {}, TODAY).focal_points["FP"]["email"] == address
    else:
        assert any("not an e-mail address" in e["message"] for e in errors_of(doc))


@pytest.mark.parametrize("code", ["ABC\n", "ພົນ", "A B", "-A", "A" * 51, "ＡＢＣ"])
def test_a_code_is_ascii_letters_digits_and_nothing_after(code):
    """'$' let a trailing newline through: "ABC\\n" was a code of its own."""
    from marshmallow import ValidationError

    from shared.schemas.common import CODE
    with pytest.raises(ValidationError, match="Latin letters"):
        CODE(code)


@pytest.mark.parametrize("field, name, words", [("name", "Line one\nline two", "one line"),
                                                ("nameLo", "ບ້ານ\r\nນ້ຳທາ", "one line"),
                                                ("nameLo", "ນ" * 231, "230"), ("name", "", "1-230")])
def test_a_name_is_one_line_of_at_most_230_characters(field, name, words):
    from marshmallow import ValidationError

    from shared.schemas.api import OrgUnitImportSchema
    with pytest.raises(ValidationError) as refused:
        OrgUnitImportSchema().load({"code": "X", field: name})
    assert words in str(refused.value.messages[field])
    assert OrgUnitImportSchema().load({"code": "X", "nameLo": ""})["nameLo"] is None
    assert OrgUnitImportSchema().load({"code": "X", "nameLo": "  "})["nameLo"] is None
    assert "nameLo" not in OrgUnitImportSchema().load({"code": "X", "name": "Renamed"})  # kept as it is


def test_a_hierarchy_is_a_units_whole_timeline_and_is_checked():
    doc = {"orgUnits": [
        *BASE["orgUnits"], {"code": "04", "name": "Bokeo", "parent": "LA", "openingDate": "1990-01-01"},
        {"code": "V", "name": "Village", "openingDate": "2000-01-01", "parent": "04",
         "hierarchy": [{"parent": "03", "from": "2000-01-01", "to": "2020-01-01"},
                       {"parent": "04", "from": "2020-01-01"}]}]}
    p = plan(doc, empty(), {}, TODAY)
    assert p.links["V"] == [Link("03", dt.date(2000, 1, 1), dt.date(2020, 1, 1)), Link("04", dt.date(2020, 1, 1))]
    assert [(x.path, x.valid_from) for x in p.paths["V"]] == [("/LA/03/V/", FAR_PAST),
                                                              ("/LA/04/V/", dt.date(2020, 1, 1))]
    bad = {"code": "V", "name": "Village", "openingDate": "2000-01-01", "parent": "03", "parentFrom": "2001-01-01",
           "hierarchy": [{"parent": "NOPE", "from": "2000-01-01", "to": "2010-01-01"},
                         {"parent": "V", "from": "2005-01-01"}, {"parent": "04", "from": "2004-01-01"}]}
    messages = " | ".join(e["message"] for e in errors_of({"orgUnits": [*doc["orgUnits"][:3], bad]}))
    for words in ("not both", "unknown parent 'NOPE'", "cycle", "to 2010-01-01 is not the next parent's from",
                  "from 2004-01-01 is not after 2005-01-01", "parent '03' is not the hierarchy's last ('04')"):
        assert words in messages, (words, messages)


@pytest.mark.parametrize("field, value", [("timelyDays", 2147483647), ("expiryDays", 36501), ("orgUnitLevel", 51)])
def test_a_data_sets_days_and_level_are_bounded(field, value):
    """An unbounded timelyDays overflowed date arithmetic in every later submission and check."""
    from marshmallow import ValidationError

    from shared.schemas.api import DataSetImportSchema
    with pytest.raises(ValidationError) as refused:
        DataSetImportSchema().load({"code": "DY", field: value})
    assert field in refused.value.messages


def test_a_hierarchy_contradicting_itself_is_refused_and_one_from_before_the_opening_taken():
    unit = {"code": "V", "name": "Village", "openingDate": "2000-01-01"}
    hierarchy = [{"parent": "LA", "from": "2000-01-01", "to": None}, {"parent": "03", "from": "2010-01-01"}]
    messages = " | ".join(e["message"] for e in errors_of({"orgUnits": [*BASE["orgUnits"],
                                                                        {**unit, "hierarchy": hierarchy}]}))
    assert "to null is not the next parent's from" in messages
    # what parentFrom accepts (a move dated before the opening) comes back from the export as
    # a hierarchy, and must post back: a restore refused it
    for placed in ({"parent": "LA", "parentFrom": "1999-01-01"}, {"hierarchy": [{"parent": "LA", "from": "1999-01-01"}]}):
        p = plan({"orgUnits": [*BASE["orgUnits"], {**unit, **placed}]}, empty(), {}, TODAY)
        assert p.links["V"] == [Link("LA", dt.date(1999, 1, 1))]
    # a unit placed some years after it opened (so its export begins later) is taken as it is
    p = plan({"orgUnits": [*BASE["orgUnits"], {**unit, "hierarchy": [{"parent": "03", "from": "2005-01-01"}]}]},
             empty(), {}, TODAY)
    assert p.links["V"] == [Link("03", dt.date(2005, 1, 1))]


@pytest.mark.parametrize("value", [1.9, 0.5, "15", 1e3])
def test_days_are_whole_json_numbers(value):
    from marshmallow import ValidationError

    from shared.schemas.api import DataSetImportSchema
    with pytest.raises(ValidationError):
        DataSetImportSchema().load({"code": "DY", "expiryDays": value})


def test_a_partial_update_keeps_the_lao_name():
    """Absent fields keep their value: an update of the name alone (or of the parent) set
    nameLo to null, as the schema took an absent nameLo for an empty one."""
    first = plan({"orgUnits": BASE["orgUnits"] + [{"code": "V", "name": "V", "nameLo": "ບ້ານ", "parent": "03",
                                                    "openingDate": "2000-01-01"}]}, empty(), {}, TODAY)
    reg = Registry(1, first.org_units, first.links, {}, {}, {}, {})
    for change in ({"code": "V", "name": "V2"}, {"code": "V", "parent": "LA", "parentFrom": "2020-01-01"}):
        assert plan({"orgUnits": [change]}, reg, first.paths, TODAY).org_units["V"]["name_lo"] == "ບ້ານ"
