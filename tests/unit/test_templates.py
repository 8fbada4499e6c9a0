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
