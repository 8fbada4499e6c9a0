from decimal import Decimal

import pytest

from shared.values import WHITESPACE, ValueTypeError, normalise, numeric


@pytest.mark.parametrize("vtype, raw, out", [
    ("INTEGER", "12", "12"), ("INTEGER", " -3 ", "-3"), ("INTEGER", 7, "7"), ("INTEGER", "12.0", "12"),
    ("INTEGER_ZERO_OR_POSITIVE", "0", "0"), ("NUMBER", "1.50", "1.5"), ("NUMBER", "1e3", "1000"),
    ("NUMBER", 2.25, "2.25"), ("PERCENTAGE", "100", "100"), ("PERCENTAGE", "0.5", "0.5"),
    ("BOOLEAN", "TRUE", "true"), ("BOOLEAN", "0", "false"), ("BOOLEAN", True, "true"),
    ("TEXT", "ບ້ານນ້ຳແກ້ວ", "ບ້ານນ້ຳແກ້ວ"), ("INTEGER", "", ""), ("TEXT", "", ""),
    ("INTEGER", "123456789012345", "123456789012345"), ("NUMBER", "123456789012345.5", "123456789012345.5"),
    ("NUMBER", "1.50000000000000000000", "1.5"), ("NUMBER", "1e-15", "0.000000000000001"),
    ("NUMBER", "-0", "0"), ("NUMBER", "-0.00", "0"), ("PERCENTAGE", "-0", "0"), ("INTEGER", "-0", "0"),
])
def test_normalise(vtype, raw, out):
    assert normalise(vtype, raw) == out


@pytest.mark.parametrize("vtype, raw", [
    ("INTEGER", "1.5"), ("INTEGER", "ten"), ("INTEGER", "1e3"), ("INTEGER_ZERO_OR_POSITIVE", "-1"), ("NUMBER", "NaN"),
    ("NUMBER", "Infinity"), ("NUMBER", "1,5"), ("PERCENTAGE", "101"), ("PERCENTAGE", "-0.1"),
    ("BOOLEAN", "yes"), ("INTEGER", None), ("INTEGER", [1]),
    # beyond 15 digits either side of the point (was a 500: Decimal.quantize past 28 digits)
    ("NUMBER", "1e28"), ("NUMBER", "1e400"), ("NUMBER", "123456789012345678901234567890.5"),
    ("NUMBER", "0.1234567890123456"), ("INTEGER", "1234567890123456"), ("PERCENTAGE", "1e400"),
    # ASCII digits only
    ("NUMBER", "1_000"), ("NUMBER", "١٢"), ("INTEGER", "١٢"), ("NUMBER", "1e1000"),
    # a bad one is named as sent, not as stripped
    ("PERCENTAGE", " x "),
])
def test_bad_values_name_the_value_and_type(vtype, raw):
    with pytest.raises(ValueTypeError) as err:
        normalise(vtype, raw)
    if raw is not None and not isinstance(raw, list):
        assert repr(raw) in str(err.value)


def test_numeric():
    assert numeric("INTEGER", "12") == Decimal(12)
    assert numeric("BOOLEAN", "true") == 1 and numeric("BOOLEAN", "false") == 0
    assert numeric("TEXT", "x") is None and numeric("NUMBER", "") is None


def test_zero_with_any_exponent_is_zero():
    """0e20 was refused as too large by returns, and taken as 0 by history."""
    assert normalise("NUMBER", "0e20") == normalise("PERCENTAGE", "0E-20") == "0"


@pytest.mark.parametrize("vtype", ["INTEGER", "NUMBER", "PERCENTAGE", "BOOLEAN", "TEXT"])
def test_a_blank_value_is_no_value_as_an_empty_one(vtype):
    """DHIS2 reads a value trimmed to null: blank deletes, as "" does (a number refused it
    as not a number, while history took it as empty)."""
    for blank in ("  ", "\t", "\u00a0", "\u3000 \n"):
        assert normalise(vtype, blank) == ""


def test_history_trims_exactly_what_str_strip_takes():
    assert WHITESPACE == "".join(c for c in map(chr, range(0x110000)) if c.isspace())


def test_an_integer_past_the_digits_python_converts_is_too_large_not_a_crash():
    for raw in ("9" * 5000, "-" + "9" * 5000, "9" * 5000 + ".0", "0" * 5000 + "7"):
        for value_type in ("INTEGER", "INTEGER_ZERO_OR_POSITIVE"):
            if raw.startswith("0"):
                assert normalise(value_type, raw) == "7"  # leading zeros are no size
                continue
            with pytest.raises(ValueTypeError, match="too large"):
                normalise(value_type, raw)


def test_a_value_of_no_type_is_shown_as_it_was_sent():
    with pytest.raises(ValueTypeError) as err:
        normalise("TEXT", {"a": "ບ"})
    assert '{"a": "ບ"}' in str(err.value)
