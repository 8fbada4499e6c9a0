"""Data value types (DHIS2's), checked and normalised in one place.

Submission uses these to refuse a value synchronously (400); validation uses
the same functions, so the two can never disagree about what a value is.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_INTEGER = re.compile(r"^[+-]?\d+$")
# JSON clients send 12.0 for 12; exponents (1e3) are not a way anyone writes a count
_INTEGRAL_DECIMAL = re.compile(r"^([+-]?\d+)\.0*$")
MAX_TEXT = 50_000


class ValueTypeError(ValueError):
    pass


def _decimal(raw: str, value_type: str) -> Decimal:
    try:
        number = Decimal(raw.strip())
    except InvalidOperation:
        raise ValueTypeError(f"value {raw!r} is not a number ({value_type})") from None
    if not number.is_finite():
        raise ValueTypeError(f"value {raw!r} is not a finite number ({value_type})")
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
        raise ValueTypeError(f"value {raw!r} is not text or a number")
    if raw == "":
        return ""
    text = raw.strip()
    if value_type in ("INTEGER", "INTEGER_ZERO_OR_POSITIVE"):
        if not _INTEGER.match(text):
            integral = _INTEGRAL_DECIMAL.match(text)
            if not integral:
                raise ValueTypeError(f"value {raw!r} is not an integer ({value_type})")
            text = integral.group(1)
        number = int(text)
        if value_type == "INTEGER_ZERO_OR_POSITIVE" and number < 0:
            raise ValueTypeError(f"value {raw!r} is negative ({value_type})")
        return str(number)
    if value_type == "NUMBER":
        return _canonical(_decimal(text, value_type))
    if value_type == "PERCENTAGE":
        number = _decimal(text, value_type)
        if not Decimal(0) <= number <= Decimal(100):
            raise ValueTypeError(f"value {raw!r} is not a percentage between 0 and 100")
        return _canonical(number)
    if value_type == "BOOLEAN":
        lowered = text.lower()
        if lowered in ("true", "1"):
            return "true"
        if lowered in ("false", "0"):
            return "false"
        raise ValueTypeError(f"value {raw!r} is not a boolean (true or false)")
    if value_type == "TEXT":
        if len(raw) > MAX_TEXT:
            raise ValueTypeError(f"text value of {len(raw)} characters is longer than {MAX_TEXT}")
        return raw
    raise ValueTypeError(f"unknown value type {value_type!r}")


def _canonical(number: Decimal) -> str:
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
