"""The synchronous checks of a return, against an in-memory replica."""
import datetime as dt

import pytest

from services.submission.formats import RawReturn, RawValue
from services.submission.intake import Refused, check
from shared.auth import Principal
from tests.support.metadata import data_set, element, snapshot

NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.timezone.utc)
MD = snapshot({"LA": None, "03": "LA", "D1": "03", "D2": "03", "V1": "D1", "V2": "D2"},
              elements=[element("POP", combos=("M", "F")), element("HH"), element("OTHER")],
              data_sets=[data_set("DS", ["POP", "HH"], level=4),
                         data_set("M", ["HH"], period_type="Monthly", units=["D1"], expiry=30)])
REPORTER = Principal("r", "reporter", "D1")


def raw(values, ds="DS", period="2025", ou="V1"):
    return RawReturn(ds, period, ou, None, [RawValue(i, *v) for i, v in enumerate(values)])


def test_a_good_return_is_normalised():
    ok = check(raw([("POP", "M", " 12 "), ("POP", "F", 13), ("HH", None, "4")]), MD, REPORTER, NOW)
    assert [(v["data_element"], v["category_option_combo"], v["value"]) for v in ok.values] == [
        ("POP", "M", "12"), ("POP", "F", "13"), ("HH", "default", "4")]
    assert ok.period.code == "2025" and ok.org_unit == "V1"
    assert ok.on_time is False  # 2025 + 15 days is long past


def test_dhis2s_default_combo_uid_is_the_default_combo():
    """An export by code names the default combo by DHIS2's UID when it has no code: taken
    as the attribute option combo, it was refused as the category option combo."""
    ok = check(raw([("HH", "HllvX50cXC0", "4")]), MD, REPORTER, NOW)
    assert [v["category_option_combo"] for v in ok.values] == ["default"]
    assert "unknown category option combo 'HllvX50cXC0'" in conflicts(raw([("POP", "HllvX50cXC0", "1")]))[0]["message"]


def conflicts(ret, principal=REPORTER) -> list[dict]:
    with pytest.raises(Refused) as err:
        check(ret, MD, principal, NOW)
    assert err.value.status == 400
    return err.value.body["conflicts"]


def test_every_problem_is_listed():
    found = conflicts(raw([("POP", None, "1"), ("POP", "X", "1"), ("OTHER", None, "1"), ("GHOST", None, "1"),
                           ("HH", None, "1.5")], period="2025Q1"))
    messages = " | ".join(c["message"] for c in found)
    assert "categoryOptionCombo is required for 'POP'" in messages
    assert "unknown category option combo 'X'" in messages
    assert "'OTHER' is not in data set 'DS'" in messages
    assert "unknown data element 'GHOST'" in messages
    assert "is not an integer" in messages and any(c["value"] == "1.5" for c in found)
    assert "Quarterly, but data set 'DS' is Yearly" in messages


def test_missing_header_fields():
    found = conflicts(RawReturn(None, None, None, None, []))
    assert {c["object"] for c in found} == {"dataSet", "period", "orgUnit"}


def test_unit_not_assigned_and_future_period():
    messages = " | ".join(c["message"] for c in conflicts(raw([("HH", None, "1")], ou="D1")))
    assert "not assigned data set 'DS'" in messages
    messages = " | ".join(c["message"] for c in conflicts(raw([("HH", None, "1")], period="2027")))
    assert "in the future" in messages


def test_a_value_given_twice():
    messages = " | ".join(c["message"] for c in conflicts(raw([("HH", None, "1"), ("HH", None, "2")])))
    assert "given twice" in messages


def test_outside_scope_is_403_naming_the_unit():
    with pytest.raises(Refused) as err:
        check(raw([("HH", None, "1")], ou="V2"), MD, REPORTER, NOW)
    assert err.value.status == 403 and "'V2'" in err.value.body["message"]


def test_a_value_for_another_unit_is_scope_checked_too():
    ret = raw([("HH", None, "1")])
    ret.values.append(RawValue(1, "HH", None, "2", None, None, "V2"))
    with pytest.raises(Refused) as err:
        check(ret, MD, REPORTER, NOW)
    assert err.value.status == 403 and "'V2'" in err.value.body["message"]


def test_scope_is_checked_before_the_body():
    # a sender outside its scope hears 403, not the body's other faults
    for ret in (raw([("HH", None, "abc")], ou="V2"), raw([("HH", None, "1")], ou="V2", period="2027")):
        with pytest.raises(Refused) as err:
            check(ret, MD, REPORTER, NOW)
        assert err.value.status == 403 and "'V2'" in err.value.body["message"]
    ret = raw([("HH", None, "1"), ("GHOST", None, "1")])
    ret.values.append(RawValue(2, "HH", None, "2", None, None, "V2"))
    with pytest.raises(Refused) as err:
        check(ret, MD, REPORTER, NOW)
    assert err.value.status == 403


def test_closed_period_is_403():
    with pytest.raises(Refused) as err:
        check(raw([("HH", None, "1")], ds="M", period="202609", ou="D1"), MD, REPORTER, NOW)
    assert err.value.status == 403 and "period closed" in err.value.body["message"]
    ok = check(raw([("HH", None, "1")], ds="M", period="202610", ou="D1"), MD, REPORTER, NOW)
    assert ok.on_time is False  # due 31 Oct + 15 days


def test_a_comment_longer_than_dhis2_allows_is_refused():
    long = "ບ" * 50_001
    found = conflicts(raw([("HH", None, "1", long), ("POP", "M", "2", "ບ" * 50_000), ("POP", "F", "3")]))
    assert len(found) == 1 and found[0]["object"] == "dataValues[0].comment"
    assert "50001 characters is longer than 50000" in found[0]["message"]
    assert found[0]["value"] == "ບ" * 200 + "..."  # the start of it, not 50,001 characters back


def test_a_place_a_value_brings_in_is_refused_under_that_values_name():
    ret = RawReturn("M", "202609", "D1", None, [RawValue(0, "HH", None, "1"),
                                                 RawValue(1, "HH", None, "2", org_unit="V1"),
                                                 RawValue(2, "HH", None, "3", org_unit="V1", period="202608")])
    found = conflicts(ret)
    assert [(c["object"], c["value"]) for c in found] == [("dataValues[2].orgUnit", "V1"),
                                                          ("dataValues[1].orgUnit", "V1")]
    assert all("not assigned data set 'M'" in c["message"] for c in found)


def test_a_value_with_a_problem_still_has_its_place_checked():
    """Every problem at once: a bad value for a unit not assigned the data set was told only
    its value, then, fixed, the unit (a second round trip for the sender)."""
    ret = RawReturn("M", "202610", "D1", None, [RawValue(0, "HH", None, "x", org_unit="V1"),
                                                 RawValue(1, "GHOST", None, "1", org_unit="V2", period="202609")])
    found = conflicts(ret, principal=Principal("a", "admin", None))
    assert sorted((c["object"], c["value"]) for c in found) == [
        ("dataValues[0].orgUnit", "V1"), ("dataValues[0].value", "x"),
        ("dataValues[1].dataElement", "GHOST"), ("dataValues[1].orgUnit", "V2")]
    assert all("not assigned data set 'M'" in c["message"] for c in found if c["object"].endswith("orgUnit"))


def test_a_csv_no_data_set_fits_lists_that_beside_its_other_problems():
    from services.submission import formats

    head = ("dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,"
            "comment,followup\n")
    ret = formats.parse("text/csv", head + "OTHER,2025,V1,,,1,,,,\nPOP,2025,V1,X,,2,,,,\nHH,2025,V1,,,abc,,,,\n", {})
    formats.infer_data_set(ret, MD, dt.date(2026, 11, 27))
    by_object = {c["object"]: c["message"] for c in conflicts(ret)}
    assert "no data set holds every data element" in by_object["dataSet"]   # OTHER is in none
    assert "unknown category option combo 'X'" in by_object["line 3.categoryOptionCombo"]
    assert "is not an integer" in by_object["line 4.value"]
    # a code the file gets wrong is named as unknown, and the data set is found by the others
    # (it was also "no data set holds every data element", which sent the sender elsewhere)
    ret = formats.parse("text/csv", head + "GHOST,2025,V1,,,1,,,,\nPOP,2025,V1,X,,2,,,,\nHH,2025,V1,,,abc,,,,\n", {})
    formats.infer_data_set(ret, MD, dt.date(2026, 11, 27))
    by_object = {c["object"]: c["message"] for c in conflicts(ret)}
    assert ret.data_set == "DS" and "dataSet" not in by_object
    assert "unknown data element 'GHOST'" in by_object["line 2.dataElement"]
    assert "unknown category option combo 'X'" in by_object["line 3.categoryOptionCombo"]


def test_a_csv_without_data_set_is_read_by_its_period_type_too():
    from services.submission import formats

    md = snapshot({"LA": None, "03": "LA", "D1": "03", "V1": "D1"}, elements=[element("HH")],
                  data_sets=[data_set("Y", ["HH"], level=4), data_set("M", ["HH"], period_type="Monthly", level=4)])
    head = "dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,comment,followup\n"
    monthly = formats.parse("text/csv", head + "HH,202506,V1,,,7,,,,\n", {})
    formats.infer_data_set(monthly, md, dt.date(2026, 11, 27))
    assert monthly.data_set == "M"
    # a bad period says nothing of the data set: the period is what is named
    bad = formats.parse("text/csv", head + "HH,2025-06,V1,,,7,,,,\n", {})
    formats.infer_data_set(bad, md, dt.date(2026, 11, 27))
    with pytest.raises(Refused) as err:
        check(bad, md, REPORTER, NOW)
    objects = {c["object"] for c in err.value.body["conflicts"]}
    assert "line 2.period" in objects and "dataSet" not in objects


def test_a_csv_that_fits_several_data_sets_goes_to_the_closest_fit():
    """DHIS2 stores a CSV's values without a data set: a file several data sets fit is
    not refused but given the one with fewest elements beyond the file's, then by code."""
    from services.submission import formats

    md = snapshot({"LA": None, "03": "LA", "D1": "03", "V1": "D1"},
                  elements=[element("HH"), element("POP"), element("BIRTHS")],
                  data_sets=[data_set("A", ["HH", "POP", "BIRTHS"], level=4), data_set("C", ["HH", "POP"], level=4),
                             data_set("B", ["HH", "POP"], level=4)])
    head = "dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,comment,followup\n"
    ret = formats.parse("text/csv", head + "HH,2025,V1,,,7,,,,\n", {})
    formats.infer_data_set(ret, md, dt.date(2026, 11, 27))
    assert ret.data_set == "B" and check(ret, md, REPORTER, NOW).data_set.code == "B"


def test_header_codes_that_are_not_text_and_a_bad_complete_date_are_named():
    from services.submission import formats

    read = formats.parse("application/json", '{"dataSet": "DS", "period": 2025, "orgUnit": "V1", '
                                             '"dataValues": [{"dataElement": "HH", "value": "1"}]}', {})
    assert read.period == "2025" and check(read, MD, REPORTER, NOW).period.code == "2025"  # as DHIS2 reads it
    found = conflicts(RawReturn(["DS"], "2025", "V1", "yesterday", [RawValue(0, 7, None, "1")]))
    messages = {c["object"]: c["message"] for c in found}
    assert messages["dataSet"] == "dataSet must be text, not ['DS']"
    assert "'yesterday' is not a date" in messages["completeDate"]
    assert "must be text, not 7" in messages["dataValues[0].dataElement"]
    for stamp in ("2026-01-03T10:00:00", "2026-01-03T10:00:00.000+07:00", "2026-01-03T03:00:00Z", "2026-01-03"):
        assert check(RawReturn("DS", "2025", "V1", stamp, [RawValue(0, "HH", None, "1")]), MD, REPORTER, NOW).values
    found = conflicts(RawReturn("DS", "2025", "V1", "2026-11-28junk", [RawValue(0, "HH", None, "1")]))
    assert [c["object"] for c in found] == ["completeDate"]  # a date followed by anything was taken


def test_an_adx_return_is_told_its_first_groups_fields_by_their_adx_names():
    from services.submission import formats

    ret = formats.parse("application/adx+xml", '<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet="DS" '
                        'orgUnit="NOWHERE"><dataValue dataElement="HH" value="1"/></group></adx>', {})
    by_object = {c["object"]: c["message"] for c in conflicts(ret)}
    assert by_object["group[1].period"] == "group[1].period is missing"
    assert by_object["group[1].orgUnit"] == "unknown org unit 'NOWHERE'"
    assert "period" not in by_object and "orgUnit" not in by_object


def test_an_adx_groups_unit_and_complete_date_are_told_once_where_the_group_names_them():
    """A probe's three groups: the second's unknown unit was told once per value, as
    group[2].dataValue[n].orgUnit (ADX has no such attribute), the third's unassigned one as
    its first value's; the first group's bad completeDate was "completeDate", a later
    group's not read at all."""
    from services.submission import formats

    ret = formats.parse("application/adx+xml", '<adx xmlns="urn:ihe:qrph:adx:2015">'
                        '<group dataSet="DS" orgUnit="V1" period="2025-01-01/P1Y" completeDate="junk">'
                        '<dataValue dataElement="HH" value="1"/></group>'
                        '<group dataSet="DS" orgUnit="NOWHERE" period="2025-01-01/P1Y" completeDate="2026-13-01">'
                        '<dataValue dataElement="HH" value="1"/><dataValue dataElement="POP" SEX="M" value="2"/>'
                        '</group><group dataSet="DS" orgUnit="D1" period="2025-01-01/P1Y">'
                        '<dataValue dataElement="HH" value="1"/></group></adx>', {})
    found = conflicts(ret, Principal("a", "admin", None))
    assert sorted((c["object"], c["value"]) for c in found) == [
        ("group[1].completeDate", "junk"), ("group[2].completeDate", "2026-13-01"),
        ("group[2].orgUnit", "NOWHERE"), ("group[3].orgUnit", "D1")], found


def test_a_long_refused_value_is_echoed_cut_in_its_message_too_and_never_inside_a_letter():
    """A 60,000-character value sent for a number: the conflict's value was cut to 200
    characters, but its message repeated all of it (a 180 KB answer); and the cut fell
    between a Lao consonant and its vowel sign, echoing a syllable never sent."""
    sent = "ກ" + "ກີ" * 30_000          # ກີ: the consonant, then its vowel sign (a combining mark)
    found = conflicts(raw([("HH", None, sent)]))
    assert len(found) == 1
    value, message = found[0]["value"], found[0]["message"]
    assert value == "ກ" + "ກີ" * 99 + "..."   # 199 characters: ກີ is not split at 200
    assert len(message) < 400 and value in message


def test_a_comment_of_spaces_alone_is_none_and_any_other_is_kept_as_sent():
    """DHIS2 trims a comment to null: "   " was kept while "" was none."""
    ok = check(raw([("POP", "M", "1", "   "), ("POP", "F", "2", " ຂໍ້ມູນ "), ("HH", None, "3", "")]), MD, REPORTER, NOW)
    assert [v["comment"] for v in ok.values] == [None, " ຂໍ້ມູນ ", None]
