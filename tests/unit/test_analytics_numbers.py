"""How a total is written: JSON numbers (integers where whole) and exact CSV text."""
from decimal import Decimal

from services.aggregation.analytics import number, plain


def test_csv_text_is_exact_and_never_in_exponent_form():
    assert plain(Decimal("1E-7")) == "0.0000001"
    assert plain(Decimal("0.00000010")) == "0.0000001"
    assert plain(Decimal("123456789012345.85")) == "123456789012345.85"  # a float would print .84
    assert plain(Decimal("1E+2")) == "100"
    assert plain(Decimal("2.500")) == "2.5"
    assert plain(Decimal("-0.0")) == "0"
    assert plain(Decimal("2.3333333333333333")) == "2.3333333333333333"


def test_json_numbers_are_integers_where_whole():
    assert number(Decimal("12.000")) == 12 and isinstance(number(Decimal("12.000")), int)
    assert number(Decimal("1E+2")) == 100 and isinstance(number(Decimal("1E+2")), int)
    assert number(Decimal("0.5")) == 0.5
