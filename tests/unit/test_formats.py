"""The three readers, without a database: what each makes of a body."""
import re
from pathlib import Path

import pytest

from services.submission import formats
from shared import dhis2_csv

FIXTURES = Path(__file__).parent.parent / "fixtures" / "dhis2"


def read(name: str, content_type: str, params=None) -> formats.RawReturn:
    return formats.parse(content_type, (FIXTURES / name).read_text(encoding="utf-8"), params or {})


def values(raw):
    return [(v.data_element, v.combo, v.value, v.comment) for v in raw.values]


def test_the_three_dhis2_examples_read_alike():
    js = read("datavalueset.json", "application/json")
    adx = read("datavalueset.adx.xml", "application/adx+xml; charset=utf-8")
    csv = read("datavalueset.csv", "text/csv", {"dataSet": "MORT5"})
    for raw in (js, adx, csv):
        assert (raw.data_set, raw.org_unit, raw.period) == ("MORT5", "NGELEHUN", "201401")
        assert [v[:3] for v in values(raw)] == [("DEATHS_MALARIA", "F", "12"), ("DEATHS_MALARIA", "M", "9"),
                                                ("DEATHS_MEASLES", "F", "3"), ("BEDS", None, "40")]
        assert values(raw)[0][3] == "ຂໍ້ມູນຈາກສຸກສາລາ"  # Lao comment, annotation and CSV alike
    assert [v.where for v in csv.values][:2] == ["line 2", "line 3"]
    assert not csv.infer_data_set and read("datavalueset.csv", "text/csv").infer_data_set


@pytest.mark.parametrize("iso, code", [("2026-09-01/P1M", "202609"), ("2026-07-01/P3M", "2026Q3"),
                                       ("2026-01-01/P1Y", "2026")])
def test_adx_periods_are_iso_intervals(iso, code):
    body = (f'<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet="D" orgUnit="O" period="{iso}">'
            '<dataValue dataElement="E" value="1"/></group></adx>')
    assert formats.parse("application/adx+xml", body, {}).period == code


def test_adx_with_several_categories_asks_for_the_combo():
    body = ('<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet="D" orgUnit="O" period="2026-01-01/P1Y">'
            '<dataValue dataElement="E" SEX="F" AGE="0-4" value="1"/></group></adx>')
    raw = formats.parse("application/adx+xml", body, {})  # read, and the problem listed with intake's
    assert "AGE, SEX" in raw.problems[0]["message"]


def test_problems_in_a_readable_body_are_listed_not_raised():
    import json

    raw = formats.parse("application/json", json.dumps({
        "dataSet": "D", "period": "202601", "orgUnit": "O", "foo": 2,
        "dataValues": [{"dataElement": "E", "value": "1", "bar": {"x": 1}}, {"dataElement": "E"}]}), {})
    assert [(p["object"], p["value"]) for p in raw.problems] == [
        ("foo", "2"), ("dataValues[0].bar", '{"x": 1}'), ("dataValues[1].value", None)]
    assert [v.data_element for v in raw.values] == ["E"]  # the readable value goes on to intake
    adx = formats.parse("application/adx+xml", (
        '<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet="D" orgUnit="O" period="2026-01-01/P1M">'
        '<dataValue dataElement="E" value="1"/></group><group dataSet="D" orgUnit="P" period="2026-06-01/P3M">'
        '<dataValue dataElement="E" value="2"/></group></adx>'), {})
    assert [p["object"] for p in adx.problems] == ["group[2].period"] and len(adx.values) == 1


def test_csv_header_in_either_spelling_and_nothing_else():
    today = "dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,comment,followup"
    assert dhis2_csv.read(today + "\nE,2026,O,,,1,,,,false\n") == [(2, ["E", "2026", "O", "", "", "1", "", "", "", "false"])]
    with pytest.raises(dhis2_csv.CsvError) as exc:
        dhis2_csv.read("value,dataelement\n1,E\n")
    assert exc.value.problems[0][0] == 1


def test_csv_blank_lines_are_skipped_and_lines_keep_their_numbers():
    header = ",".join(dhis2_csv.COLUMNS)
    body = f"{header}\n\n , ,,,,\t,,,,\nE,2026,O,,, ,,,,\n"
    # an empty line and a line of blank fields are skipped (line 4 is still line 4); a line
    # with codes and a blank value is a row
    assert dhis2_csv.read(body) == [(4, ["E", "2026", "O", "", "", " ", "", "", "", ""])]


def test_csv_lines_may_stop_after_their_value_as_dhis2_reads_them():
    header = ",".join(dhis2_csv.COLUMNS)
    assert dhis2_csv.read(f"{header}\nE,2026,O,,,7\nE,2025,O,,,8,,,note\n") == [
        (2, ["E", "2026", "O", "", "", "7", "", "", "", ""]), (3, ["E", "2025", "O", "", "", "8", "", "", "note", ""])]
    with pytest.raises(dhis2_csv.CsvError) as exc:
        dhis2_csv.read(f"{header}\nE,2026,O,,\nE,2026,O,,,1,,,,,extra\n")
    assert [m for _, m in exc.value.problems] == ["line 2 has 5 fields, not 10 (at least 6: up to value)",
                                                   "line 3 has 11 fields, not 10"]
    # and so may the header
    short = ",".join(dhis2_csv.COLUMNS[:6])
    assert dhis2_csv.read(f"{short}\nE,2026,O,,,7\n") == [(2, ["E", "2026", "O", "", "", "7", "", "", "", ""])]
    with pytest.raises(dhis2_csv.CsvError):
        dhis2_csv.read(",".join(dhis2_csv.COLUMNS[:5]) + "\nE,2026,O,,\n")


@pytest.mark.parametrize("content_type", ["application/csv", "application/xml+adx", "application/json; charset=utf-8"])
def test_aliases_dhis2_clients_send(content_type):
    body = {"application/csv": "dataelement,period,orgunit,catoptcombo,attroptcombo,value,storedby,lastupd,comment\n",
            "application/xml+adx": '<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet="D"/></adx>',
            }.get(content_type, '{"dataSet": "D", "dataValues": []}')
    formats.parse(content_type, body, {})


def test_other_media_types_are_unsupported():
    with pytest.raises(formats.UnsupportedMediaType):
        formats.parse("application/vnd.ms-excel", "x", {})


CSV_HEADER = ",".join(dhis2_csv.COLUMNS)


def test_csv_an_unclosed_quote_is_refused_at_its_line_not_read_as_the_rest_of_the_file():
    body = f'{CSV_HEADER}\nPOP,202602,V,M,,5,,,"ບໍ່ປິດ,\nPOP,202602,V,F,,6,,,,\nHH,202602,V,,,3,,,,\n'
    with pytest.raises(formats.ParseError) as refused:
        formats.parse("text/csv", body, {})
    assert [c["object"] for c in refused.value.conflicts] == ["line 2"]
    assert "never closed" in refused.value.conflicts[0]["message"]


def test_csv_dhis2s_deleted_column_and_a_spreadsheets_trailing_commas():
    raw = formats.parse("text/csv", f"{CSV_HEADER},deleted,,\nE,202601,O,M,,5,,,,,true\nE,202601,O,F,,6,,,,,false,,\n"
                                    "E,202601,O,X,,7\n", {})
    assert [(v.combo, v.value) for v in raw.values] == [("M", ""), ("F", "6"), ("X", "7")]  # true: a deletion
    with pytest.raises(formats.ParseError) as refused:
        formats.parse("text/csv", f"{CSV_HEADER},deleted\nE,202601,O,M,,5,,,,,perhaps\n", {})
    assert "deleted 'perhaps'" in refused.value.conflicts[0]["message"]


@pytest.mark.parametrize("content_type, body, where", [
    ("application/json", '{"dataSet": "D", "period": "202601", "orgUnit": "O", "attributeOptionCombo": "PEPFAR",'
                         ' "dataValues": [{"dataElement": "E", "value": "1", "attributeOptionCombo": "USAID"}]}',
     ["attributeOptionCombo", "dataValues[0].attributeOptionCombo"]),
    ("text/csv", f"{CSV_HEADER}\nE,202601,O,M,XYZPARTNER,50\nE,202601,O,F,default,5\nE,202601,O,F,HllvX50cXC0,5\n",
     ["line 2.attributeoptioncombo"]),
    ("application/adx+xml", '<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet="D" orgUnit="O" '
                            'period="2026-01-01/P1M" FUNDING="PEPFAR"><dataValue dataElement="E" value="1"/>'
                            '</group></adx>', ["group[1].FUNDING"]),
])
def test_an_attribute_option_combo_other_than_the_default_is_named_not_dropped(content_type, body, where):
    raw = formats.parse(content_type, body, {})
    assert [p["object"] for p in raw.problems] == where
    assert all("attribute option combo" in p["message"] for p in raw.problems)


def test_adx_values_are_named_by_group_and_position_within_it():
    adx = formats.parse("application/adx+xml", (
        '<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet="D" orgUnit="O" period="2026-01-01/P1M">'
        '<dataValue dataElement="E" value="1"/><dataValue dataElement="F" value="1" comment="ຄຳເຫັນ"/>'
        '<dataValue dataElement="H" value="1" orgUnit="Q"/></group>'
        '<group dataSet="D" orgUnit="P" period="2026-01-01/P1M"><dataValue dataElement="G" value="2"/></group>'
        '</adx>'), {})
    assert [v.where for v in adx.values] == ["group[1].dataValue[1]", "group[1].dataValue[2]",
                                             "group[1].dataValue[3]", "group[2].dataValue[1]"]
    assert [(p["object"], p["value"]) for p in adx.problems] == [("group[1].dataValue[2].comment", "ຄຳເຫັນ"),
                                                                 ("group[1].dataValue[3].orgUnit", "Q")]
    assert adx.values[1].combo is None  # the comment is not read as a category


def test_a_refused_boolean_is_echoed_as_json_spells_it():
    assert formats.conflict("x", True, "m")["value"] == "true"
    assert formats.conflict("x", False, "m")["value"] == "false"


def test_json_values_marked_deleted_are_deletions():
    import json

    raw = formats.parse("application/json", json.dumps({
        "dataSet": "D", "period": "202601", "orgUnit": "O",
        "dataValues": [{"dataElement": "E", "value": "4", "deleted": True}, {"dataElement": "F", "deleted": True},
                       {"dataElement": "G", "value": "5", "deleted": False}, {"dataElement": "H", "deleted": "yes"}]}), {})
    assert [(v.data_element, v.value) for v in raw.values] == [("E", ""), ("F", ""), ("G", "5")]
    assert [p["object"] for p in raw.problems] == ["dataValues[3].deleted"]


def test_import_strategy_delete_deletes_what_is_named_and_other_options_are_named():
    body = '{"dataSet": "D", "period": "202601", "orgUnit": "O", "dataValues": [{"dataElement": "E", "value": "6"}]}'
    assert [v.value for v in formats.parse("application/json", body, {"importStrategy": "DELETE"}).values] == [""]
    assert [v.value for v in formats.parse("application/json", body, {"importStrategy": "create_and_update"}).values] \
        == ["6"]
    # DHIS2's other name for it: ignored, strategy=DELETE was a 202 that deleted nothing
    assert [v.value for v in formats.parse("application/json", body, {"strategy": "delete"}).values] == [""]
    assert [v.value for v in formats.parse("application/json", body, {"strategy": "DELETE",
                                                                      "importStrategy": "DELETE"}).values] == [""]
    for params, where in (({"importStrategy": "CREATE"}, "importStrategy"), ({"importStrategy": "BOGUS"}, "importStrategy"),
                          ({"strategy": "UPDATE"}, "strategy"),
                          ({"strategy": "DELETE", "importStrategy": "CREATE_AND_UPDATE"}, "strategy"),
                          ({"idScheme": "UID"}, "idScheme"), ({"orgUnitIdScheme": "NAME"}, "orgUnitIdScheme")):
        with pytest.raises(formats.ParseError) as refused:
            formats.parse("application/json", body, params)
        assert [c["object"] for c in refused.value.conflicts] == [where]
    assert formats.parse("application/json", body, {"idScheme": "code", "async": "true", "preheatCache": "false"})
    raw = formats.parse("application/json", body.replace('"dataSet"', '"idScheme": "UID", "dataSet"'), {})
    assert [p["object"] for p in raw.problems] == ["idScheme"]


def test_a_json_set_whose_values_name_their_own_place_needs_none_in_its_header():
    import json

    values = [{"dataElement": "E", "value": "1", "period": "202602", "orgUnit": "B"},
              {"dataElement": "E", "value": "2", "period": "202601", "orgUnit": "A"}]
    raw = formats.parse("application/json", json.dumps({"dataSet": "D", "dataValues": values}), {})
    assert (raw.period, raw.org_unit) == ("202602", "B")  # the first value's, as a CSV's first line
    half = formats.parse("application/json", json.dumps({"dataSet": "D", "dataValues": [
        values[0], {"dataElement": "E", "value": "3"}]}), {})
    assert (half.period, half.org_unit) == (None, None)  # a value without its own: the header is needed


def test_adx_value_attributes_beside_the_combo_are_no_silent_partner():
    adx = formats.parse("application/adx+xml", (
        '<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet="D" orgUnit="O" period="2026-01-01/P1M">'
        '<dataValue dataElement="E" categoryOptionCombo="M" attributeOptionCombo="PARTNER_E" value="3"/>'
        '<dataValue dataElement="E" categoryOptionCombo="F" FUNDING="USAID" value="4"/>'
        '<dataValue dataElement="E" categoryOptionCombo="F" attributeOptionCombo="default" value="5"/>'
        '</group></adx>'), {})
    assert [p["object"] for p in adx.problems] == ["group[1].dataValue[1].attributeOptionCombo",
                                                   "group[1].dataValue[2].FUNDING"]
    body = '{"dataSet": "D", "period": "202601", "orgUnit": "O", "attributeOptionCombo": "default\\n", "dataValues": []}'
    assert [p["object"] for p in formats.parse("application/json", body, {}).problems] == ["attributeOptionCombo"]


def _adx(groups: str):
    return formats.parse("application/adx+xml", f'<adx xmlns="urn:ihe:qrph:adx:2015">{groups}</adx>', {})


def test_a_later_adx_group_without_its_own_unit_or_period_is_refused_not_given_the_first_ones():
    first = '<group dataSet="D" orgUnit="O" period="2026-09-01/P1M"><dataValue dataElement="E" value="1"/></group>'
    raw = _adx(first + '<group dataSet="D" period="2026-10-01/P1M"><dataValue dataElement="E" value="777"/></group>'
                       '<group dataSet="D" orgUnit="O"><dataValue dataElement="E" value="778"/></group>')
    assert [(p["object"], p["message"]) for p in raw.problems] == [
        ("group[2].orgUnit", "group[2] names no orgUnit: every group names its own"),
        ("group[3].period", "group[3] names no period: every group names its own")]
    assert [v.value for v in raw.values] == ["1"]  # and none of theirs is stored under group[1]'s place


def test_an_adx_element_the_format_has_no_place_for_is_refused_not_skipped():
    raw = _adx('<group dataSet="D" orgUnit="O" period="2026-09-01/P1M">'
               '<DataValue dataElement="RAIN" value="9"/><dataValue dataElement="E" value="1"><note>x</note>'
               '</dataValue></group><gruop dataSet="D"/>')
    assert [(p["object"], p["value"]) for p in raw.problems] == [
        ("adx", "gruop"), ("group[1]", "DataValue"), ("group[1].dataValue[1]", "note")]
    assert "unknown element <gruop> in adx" in raw.problems[0]["message"]


def test_a_first_adx_group_without_a_data_set_is_not_called_data_set_none():
    raw = _adx('<group orgUnit="O" period="2026-09-01/P1M"><dataValue dataElement="E" value="1"/></group>'
               '<group dataSet="D" orgUnit="P" period="2026-09-01/P1M"><dataValue dataElement="E" value="2"/></group>')
    assert not any("None" in p["message"] for p in raw.problems) and raw.data_set is None


def test_a_csv_field_past_the_readers_limit_is_told_by_its_line_in_words():
    header = ",".join(dhis2_csv.COLUMNS) + "\n"
    with pytest.raises(dhis2_csv.CsvError) as err:
        dhis2_csv.read(header + "A,202601,X,,,1,,,ok,\n" + "A,202602,X,,,1,,," + "x" * 200_000 + ",\n")
    ((line, message),) = err.value.problems
    assert line == 3 and "a field is longer than 131,072 characters" in message


def test_a_json_number_keeps_the_digits_it_was_sent_with():
    from shared.values import ValueTypeError, normalise

    body = ('{"dataSet": "D", "period": "202601", "orgUnit": "O", "dataValues": ['
            '{"dataElement": "A", "value": 123456789012345.678}, {"dataElement": "B", "value": 0.1234567890123456789},'
            '{"dataElement": "C", "value": 12}, {"dataElement": "D", "value": NaN}]}')
    raw = formats.parse("application/json", body, {})
    assert [v.value for v in raw.values] == ["123456789012345.678", "0.1234567890123456789", 12, "NaN"]
    assert normalise("NUMBER", raw.values[0].value) == "123456789012345.678"
    for refused in raw.values[1:4:2]:  # echoed as sent, not as a float rounded it
        with pytest.raises(ValueTypeError, match=re.escape(repr(refused.value))):
            normalise("NUMBER", refused.value)


def test_reading_the_json_text_for_unstorable_characters_finds_what_walking_the_document_finds():
    """The JSON text is searched first and the document walked only when the text may hold a
    NUL or a lone surrogate: both ways must find the same, whatever is escaped and how."""
    import json
    import random

    from shared.api import unstorable_fields

    rng = random.Random(7)
    alphabet = ["a", "ລາວ", "\\", "u", "0", "d", "D", "8", "f", "\x00", "\ud800", "\udfff", "\U0001f600", '"']
    texts = ['{"comment": "\\\\u0000"}', '{"a\\u0000": 1}', '{"v": "\\uD83D\\uDE00"}', '{"v": "\\uDBFF"}',
             '{"v": ["\\u0ea5", {"w": "\\udc00"}]}', '{"v": "\\\\ud800"}']
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        doc = {"dataValues": [{"value": s, s: [s]}]}
        texts.append(json.dumps(doc, ensure_ascii=rng.random() < 0.5))
    found = 0
    for text in texts:
        doc = json.loads(text)
        walked = unstorable_fields(doc)
        assert unstorable_fields(doc, text=text) == walked, text
        found += bool(walked)
    assert 100 < found < len(texts) - 100  # both kinds well represented


def test_a_json_field_named_twice_is_refused_by_name_not_settled_by_the_last():
    """{"dataValues": [...], "dataValues": []} was a return of nothing, silently."""
    body = ('{"dataSet": "DS", "period": "202601", "orgUnit": "O", '
            '"dataValues": [{"dataElement": "E", "value": "1", "value": "2"}]}')
    with pytest.raises(formats.ParseError) as exc:
        formats.parse("application/json", body, {})
    assert [c["object"] for c in exc.value.conflicts] == ["body"]
    assert "field 'value' appears twice" in exc.value.conflicts[0]["message"]


def test_csv_lines_ended_by_cr_alone_are_lines():
    header = ",".join(dhis2_csv.COLUMNS)
    assert dhis2_csv.read(f"{header}\rE,2026,O,,,7\rE,2025,O,,,8,,,ບັນທຶກ\r") == [
        (2, ["E", "2026", "O", "", "", "7", "", "", "", ""]), (3, ["E", "2025", "O", "", "", "8", "", "", "ບັນທຶກ", ""])]
