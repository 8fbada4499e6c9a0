"""``FlatItems`` (shared.schemas.events) checks a return event's violations as their
marshmallow schema would, at a fraction of the cost: the same answers, the same refusals."""
import datetime as dt
from decimal import Decimal

import pytest
from marshmallow import Schema, ValidationError, fields

from shared.events import envelope, event_type
from shared.schemas.events import FlatItems, ViolationSchema

FULL = {"rule": "OUTLIER", "importance": "LOW", "left": 812.0, "operator": "between", "right": None,
        "org_unit": "010101001", "period": "202503", "message": "E001.M 812 is outside 100..400",
        "name": "Outlier", "name_lo": "ຄ່າຜິດປົກກະຕິ", "data_element": "E001", "category_option_combo": "M",
        "expected_min": 100.0, "expected_max": 400.0}
MINIMAL = {"rule": "R1", "importance": "HIGH", "operator": "<=", "org_unit": "V1", "period": "2025"}


class Reference(Schema):
    """What ``FlatItems`` stands in for: a list of nested schemas."""
    violations = fields.List(fields.Nested(ViolationSchema), required=True)


class Fast(Schema):
    violations = FlatItems(ViolationSchema, required=True)


@pytest.mark.parametrize("item", [
    FULL, MINIMAL,
    {**MINIMAL, "unknown": "left out", "left": 3, "right": "4.5"},   # ints and numeric text are numbers
    {**MINIMAL, "name": None, "message": "ຂໍ້ຄວາມ"},
])
def test_loads_what_the_schema_loads(item):
    assert Fast().load({"violations": [item]}) == Reference().load({"violations": [item]})


@pytest.mark.parametrize("change", [
    {"importance": "URGENT"}, {"rule": None}, {"left": "abc"}, {"left": True}, {"right": float("nan")},
    {"period": 202503}, {"message": None},
])
def test_refuses_what_the_schema_refuses(change):
    item = {**MINIMAL, **change}
    with pytest.raises(ValidationError):
        Reference().load({"violations": [item]})
    with pytest.raises(ValidationError) as err:
        Fast().load({"violations": [item]})
    assert f"violations[0].{next(iter(change))}" in str(err.value)  # names the field


def test_a_missing_required_field_and_a_wrong_shape_are_refused():
    item = dict(MINIMAL)
    del item["rule"]
    for bad in ([item], ["not an object"], {"not": "a list"}):
        with pytest.raises(ValidationError):
            Fast().load({"violations": bad})


def test_dumps_decimals_as_numbers_as_the_schema_does():
    item = {**FULL, "left": Decimal("812.5"), "expected_max": Decimal("400")}
    fast = Fast().dump({"violations": [item]})["violations"][0]
    assert fast["left"] == 812.5 and type(fast["left"]) is float and fast["expected_max"] == 400.0
    assert fast == Reference().dump({"violations": [item]})["violations"][0]


def test_return_events_carry_their_violations_this_way():
    for name in ("return_validated", "return_rejected"):
        assert isinstance(event_type("validation", name).loader.fields["violations"], FlatItems)
    sent = envelope("validation", "return_rejected", {
        "return_id": "r1", "seq": 1, "data_set": "DS", "org_unit": "V1", "period": "2025",
        "received_at": dt.datetime(2026, 1, 5, 3, tzinfo=dt.timezone.utc), "on_time": True, "submitted_by": "u",
        "violations": [FULL]})
    assert sent["data"]["violations"] == [FULL]
