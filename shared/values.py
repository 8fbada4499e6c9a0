"""Data value types (DHIS2's), checked and normalised in one place.

Submission uses these to refuse a value synchronously (400); validation uses
the same functions, so the two can never disagree about what a value is.
"""
from __future__ import annotations

import json
import re
import unicodedata
from decimal import Decimal

# ASCII digits only: Python's \d and Decimal() also read other scripts' digits ("١٢") and
# "1_000", which no statistics office means and history's SQL does not read
_INTEGER = re.compile(r"^[+-]?\d+$", re.ASCII)
# JSON clients send 12.0 for 12; exponents (1e3) are not a way anyone writes a count
_INTEGRAL_DECIMAL = re.compile(r"^([+-]?\d+)\.0*$", re.ASCII)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$", re.ASCII)
MAX_TEXT = 50_000
# what ``str.strip()`` takes off a value (Unicode's white space: tab, line ends, no-break and
# ideographic spaces, ...), spelled out for history's SQL (``btrim(value, WHITESPACE)``),
# so that both paths read " 12\u00a0" alike. Written out, not worked out at import (a
# tenth of a second of every process's start); a unit test holds it to str.isspace()
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
              "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# A count or measure of a province has no business beyond 15 digits either side of the
# point: up to there every client reads the JSON number exactly (a double holds 15
# significant digits), and "1e400" is refused, not a 500
MAX_DIGITS = 15


ECHO_CHARS = 200  # of a refused value, enough to recognise it: a 60,000-character text is not sent back


def shown(text: str) -> str:
    """``text`` as an error may echo it: cut after ``ECHO_CHARS`` characters, never inside a
    letter (a Lao vowel or tone sign is a combining character after its consonant: cut
    between them, the echo showed a syllable that was never sent)."""
    if len(text) <= ECHO_CHARS:
        return text
    end = ECHO_CHARS
    while end > 0 and unicodedata.category(text[end]).startswith("M"):
        end -= 1
    return text[:end] + "..."


class ValueTypeError(ValueError):
    pass


def _decimal(raw: str, value_type: str) -> Decimal:
    text = raw.strip()
    if not _NUMBER.match(text):
        raise ValueTypeError(f"value {shown(raw)!r} is not a number ({value_type})")
    number = Decimal(text)
    if not number.is_zero() and number.adjusted() >= MAX_DIGITS:  # (0e20 is 0, as SQL reads it)
        raise ValueTypeError(f"value {shown(raw)!r} is too large ({value_type}: at most {MAX_DIGITS} digits "
                             "before the decimal point)")
    if number.normalize().as_tuple().exponent < -MAX_DIGITS:
        raise ValueTypeError(f"value {shown(raw)!r} has more than {MAX_DIGITS} decimal places ({value_type})")
    return number


def normalise(value_type: str, raw) -> str:
    """The canonical text of ``raw`` for ``value_type``; ``""`` (delete) passes through.

    Raises ValueTypeError with a message naming the value and the type.
    """
    if raw is None:
        raise ValueTypeError("value is missing")
    if isinstance(raw, bool):
        raw = "true" if raw else "false"
    elif isinstance(raw, (int, float, Decimal)):
        raw = str(raw)
    if not isinstance(raw, str):
        # (shown as it was sent: JSON's {"a": 1}, true, null; not Python's)
        raise ValueTypeError(f"value {shown(json.dumps(raw, ensure_ascii=False, default=str))} "
                             "is not text or a number")
    text = raw.strip()
    if text == "":
        # blank is no value, as "" (DHIS2 reads a value trimmed to null): it deletes
        return ""
    if value_type in ("INTEGER", "INTEGER_ZERO_OR_POSITIVE"):
        if not _INTEGER.match(text):
            integral = _INTEGRAL_DECIMAL.match(text)
            if not integral:
                raise ValueTypeError(f"value {shown(raw)!r} is not an integer ({value_type})")
            text = integral.group(1)
        # counted before int(), which refuses past 4,300 digits, leading zeros too (a 500)
        sign, digits = text[:1] if text[:1] in "+-" else "", text.lstrip("+-").lstrip("0") or "0"
        if len(digits) > MAX_DIGITS:
            raise ValueTypeError(f"value {shown(raw)!r} is too large ({value_type}: at most {MAX_DIGITS} digits)")
        number = int(sign + digits)
        if value_type == "INTEGER_ZERO_OR_POSITIVE" and number < 0:
            raise ValueTypeError(f"value {shown(raw)!r} is negative ({value_type})")
        return str(number)
    if value_type == "NUMBER":
        return _canonical(_decimal(raw, value_type))  # (raw: a refusal shows what was sent)
    if value_type == "PERCENTAGE":
        number = _decimal(raw, value_type)
        if not Decimal(0) <= number <= Decimal(100):
            raise ValueTypeError(f"value {shown(raw)!r} is not a percentage between 0 and 100")
        return _canonical(number)
    if value_type == "BOOLEAN":
        lowered = text.lower()
        if lowered in ("true", "1"):
            return "true"
        if lowered in ("false", "0"):
            return "false"
        raise ValueTypeError(f"value {shown(raw)!r} is not a boolean (true or false)")
    if value_type == "TEXT":
        if len(raw) > MAX_TEXT:
            raise ValueTypeError(f"text value of {len(raw)} characters is longer than {MAX_TEXT}")
        return raw
    raise ValueTypeError(f"unknown value type {value_type!r}")


def _canonical(number: Decimal) -> str:
    if number.is_zero():
        return "0"  # "-0" and "0.00" alike (PostgreSQL's numeric, which history writes, has no -0)
    if number == number.to_integral_value():
        return str(number.quantize(Decimal(1)))
    return format(number.normalize(), "f")


def numeric(value_type: str, text: str) -> Decimal | None:
    """The number a normalised value counts as in aggregates and rules (None: not numeric)."""
    if text == "" or value_type == "TEXT":
        return None
    if value_type == "BOOLEAN":
        return Decimal(1) if text == "true" else Decimal(0)
    return Decimal(text)


# A data element's value type may change, once values are stored, only to a type that
# reads every stored value as the same number (DHIS2 refuses any change once data
# exist; widening a count to a measure is what an office actually needs)
WIDENINGS = {
    ("INTEGER_ZERO_OR_POSITIVE", "INTEGER"), ("INTEGER_ZERO_OR_POSITIVE", "NUMBER"),
    ("INTEGER", "NUMBER"), ("PERCENTAGE", "NUMBER"),
}


def keeps_stored_values(old_type: str, new_type: str) -> bool:
    return old_type == new_type or (old_type, new_type) in WIDENINGS
