"""Alert texts in the recipient's language."""
from services.notify.templates import render


def test_a_data_set_named_as_a_return_is_not_called_a_return_twice():
    fields = {"recipient": "ທ່ານ ບົວ", "data_set": "ລາຍງານປະຈຳເດືອນ (MONTHLY)", "org_unit": "ບ້ານ ນ້ຳທາ (030101)",
              "period": "202610", "due_date": "2026-10-31", "deadline": "2026-11-10", "return_id": "r1",
              "violations": "", "outcome": "", "count": 0, "lines": ""}
    for kind in ("INVALID_RETURN", "LATE_RETURN", "REMINDER"):
        subject, body = render(kind, "lo", **fields)
        assert "ລາຍງານ ລາຍງານ" not in subject + body and "ລາຍງານປະຈຳເດືອນ (MONTHLY)" in subject + body
    subject, body = render("REMINDER", "en", **{**fields, "data_set": "Return of prices (PRICES)"})
    assert "The return of prices (PRICES)" in body


def _invalid_return(**details):
    import datetime as dt
    import types

    from services.notify.dispatcher import compose
    from shared.config import Settings

    row = types.SimpleNamespace(
        id=7, type="INVALID_RETURN", recipient="FP-0301", org_unit="030101", data_set="VM", period="202610",
        created_at=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
        details={"email": "sup@stat.la", "recipient_name": "Sup", "outcome": "REJECTED", "return_id": "r1",
                 "names": {"data_set": {"en": "Village monthly", "lo": "ບ້ານ ປະຈຳເດືອນ"},
                           "org_unit": {"en": "Ban Nam Dee", "lo": "ບ້ານ ນ້ຳດີ"}}, **details})
    return {lang: compose(types.SimpleNamespace(**{**vars(row), "details": {**row.details, "language": lang}}),
                          Settings.from_env({})).get_payload(decode=True).decode("utf-8") for lang in ("en", "lo")}


def test_a_failed_rule_says_that_its_comparison_does_not_hold():
    high = {"rule": "DEATHS_LE_POP", "name": "Deaths not more than population", "name_lo": "ຕາຍ ບໍ່ເກີນ ພົນລະເມືອງ",
            "importance": "HIGH", "left": 500, "operator": "less_than_or_equal_to", "right": 200}
    body = _invalid_return(violations=[high])
    assert "- [HIGH] Deaths not more than population (DEATHS_LE_POP): 500 ≤ 200 does not hold" in body["en"]
    assert "- [ສູງ] ຕາຍ ບໍ່ເກີນ ພົນລະເມືອງ (DEATHS_LE_POP): 500 ≤ 200 ບໍ່ເປັນຈິງ" in body["lo"]


def test_a_unit_rejected_for_another_units_problems_is_told_which():
    medium = {"rule": "BIRTHS_50", "name": "Births at most 50", "importance": "MEDIUM", "left": 60,
              "operator": "less_than_or_equal_to", "right": 50}
    high = {"rule": "DEATHS_LE_POP", "name": "Deaths not more than population", "importance": "HIGH",
            "left": 500, "operator": "less_than_or_equal_to", "right": 200, "org_unit": "030102", "period": "202610"}
    body = _invalid_return(violations=[medium], rejected_for=[high])["en"]
    assert "was rejected" in body and "[MEDIUM] Births at most 50 (BIRTHS_50): 60 ≤ 50 does not hold" in body
    assert ("It was rejected for these problems at other places of the same return:\n"
            "- [HIGH] 030102 202610: Deaths not more than population (DEATHS_LE_POP): 500 ≤ 200 does not hold") in body
