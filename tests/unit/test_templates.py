"""Alert texts in the recipient's language, and which SMTP refusals are final."""
import pytest

from services.notify.dispatcher import address_refused
from services.notify.templates import render


def test_a_data_set_named_as_a_return_is_not_called_a_return_twice():
    fields = {"recipient": "ທ່ານ ບົວ", "data_set": "ລາຍງານປະຈຳເດືອນ (MONTHLY)", "org_unit": "ບ້ານ ນ້ຳທາ (030101)",
              "period": "202610", "due_date": "2026-10-31", "deadline": "2026-11-10", "return_id": "r1",
              "violations": "", "outcome": "", "count": 0, "lines": ""}
    for kind in ("INVALID_RETURN", "LATE_RETURN", "REMINDER"):
        subject, body = render(kind, "lo", **fields)
        assert "ລາຍງານ ລາຍງານ" not in subject + body and "ລາຍງານປະຈຳເດືອນ (MONTHLY)" in subject + body
    # the reference data sets' names: "ບົດລາຍງານ..." (the report of ...) holds the word too
    for kind in ("INVALID_RETURN", "LATE_RETURN", "REMINDER"):
        subject, body = render(kind, "lo", **{**fields, "data_set": "ບົດລາຍງານສາທາລະນະສຸກ (HEALTH_M)"})
        assert "ລາຍງານ ບົດລາຍງານ" not in subject + body and "ບົດລາຍງານສາທາລະນະສຸກ (HEALTH_M)" in subject + body
    assert "ຍັງບໍ່ທັນໄດ້ຮັບບົດລາຍງານສາທາລະນະສຸກ (HEALTH_M) ສຳລັບໄລຍະ" in render(
        "LATE_RETURN", "lo", **{**fields, "data_set": "ບົດລາຍງານສາທາລະນະສຸກ (HEALTH_M)"})[1]
    # a name without the word keeps it: "ລາຍງານ Village monthly"
    assert "ແຈ້ງເຕືອນ: ລາຍງານ Village monthly (VM)" in render("REMINDER", "lo", **{**fields, "data_set": "Village monthly (VM)"})[0]
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


def test_a_subject_is_encoded_words_of_at_most_75_characters_that_read_back_whole():
    """RFC 2047 allows 75 characters an encoded word; email.header wrote 76, which strict
    mail readers refuse. Cut between characters, spaces inside the words: read back, the
    subject is exactly the text, Lao vowel and tone marks and the space before ໄລຍະ included."""
    import email
    import email.policy
    import re
    from email.header import decode_header, make_header
    from email.mime.text import MIMEText

    from services.notify.dispatcher import encoded_words

    for subject in ("[statnet] ລາຍງານຊັກຊ້າ: ສຸກສາລາ ບ້ານພູວານ (030102) ໄລຍະ 202510 ຈາກ ເມືອງສິງ ເມືອງນ້ຳທາ",
                    "[statnet] Late return: Monthly health return (HMIS_M) period 202510 from Ban Phouvan (030102)",
                    "ໝ"):
        msg = MIMEText("x", "plain", "utf-8")
        msg["Subject"] = encoded_words(subject)
        raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        words = re.findall(rb"=\?utf-8\?b\?[^?]*\?=", raw)
        assert words and all(len(w) <= 75 for w in words)
        read = email.message_from_bytes(raw)["Subject"]
        assert str(make_header(decode_header(read))) == subject
        assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == subject
        assert b"Subject: =?utf-8?b?" in raw  # no fold before the first word


@pytest.mark.parametrize("code, text, final", [
    (550, b"5.1.1 <g@example.la>: Recipient address rejected: User unknown", True),
    (553, b"5.1.3 Bad recipient address syntax", True),
    (550, b"No such user here", True),
    (554, b"5.7.1 <f@example.la>: Relay access denied", False),   # the relay's configuration
    (550, b"5.7.1 Relaying denied", False),
    (550, b"relay not permitted", False),
    (552, b"5.2.2 Mailbox full", False),
    (451, b"4.7.1 Greylisted, try again later", False),
    (450, "4.1.1 mailbox busy", False),
])
def test_only_a_refusal_of_the_address_itself_is_final(code, text, final):
    assert address_refused(code, text) is final
