"""How a total is written: JSON numbers (integers where whole) and exact CSV text."""
import json
from decimal import Decimal

from services.aggregation.analytics import number, plain


def test_csv_text_is_exact_and_never_in_exponent_form():
    assert plain(Decimal("1E-7")) == "0.0000001"
    assert plain(Decimal("0.00000010")) == "0.0000001"
    assert plain(Decimal("123456789012345.85")) == "123456789012345.85"  # a float would print .84
    assert plain(Decimal("1E+2")) == "100"
    assert plain(Decimal("2.500")) == "2.5"
    assert plain(Decimal("-0.0")) == "0"



def test_a_quotients_tail_is_cut_at_15_digits_in_every_format_alike():
    # PostgreSQL's quotients carry 20 digits; JSON showed the nearest double, CSV all 20
    for exact, shown in (("2.3333333333333333", "2.33333333333333"), ("9294.2499999999999999", "9294.25"),
                         ("53.333333333333333333", "53.3333333333333"), ("2.99999999999999999999", "3"),
                         ("0.000001", "0.000001"), ("1234567890123456789", "1234567890123456789")):
        assert plain(Decimal(exact)) == shown
        assert json.dumps(number(Decimal(exact))) in (shown, json.dumps(float(shown)))


def test_json_numbers_are_integers_where_whole():
    assert number(Decimal("12.000")) == 12 and isinstance(number(Decimal("12.000")), int)
    assert number(Decimal("1E+2")) == 100 and isinstance(number(Decimal("1E+2")), int)
    assert number(Decimal("0.5")) == 0.5
