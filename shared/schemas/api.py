"""Bodies of the public HTTP API (CONTRACT sections 2-4), camelCase as DHIS2 writes them.

Every request body is loaded through one of these before anything acts on
it; unknown fields are refused, and every error names the field and value.
"""
import re
import unicodedata

from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from shared.auth import BOOTSTRAP_ADMIN
from shared.schemas.common import CODE, StrictSchema
from shared.schemas.metadata import (AGGREGATION_TYPES, FOCAL_POINT_ROLES, IMPORTANCES, LANGUAGES,
                                     MISSING_VALUE_STRATEGIES, OPERATORS, PERIOD_TYPES, ROLES,
                                     VALUE_TYPES)

def _NAME(name: str, shortest: int = 1) -> None:
    """A name (English or Lao): one line of 1-230 characters, as DHIS2's. A line break or other
    control character would break a CSV cell, an e-mail subject or a dashboard's label."""
    if not shortest <= len(name) <= 230:
        raise ValidationError(f"must be {shortest}-230 characters, not {len(name)}")
    if shortest and not name.strip():  # a blank name showed as nothing in every list and e-mail
        raise ValidationError("must not be blank")
    bad = sorted({c for c in name if unicodedata.category(c) == "Cc"})
    if bad:
        raise ValidationError(f"must be one line of text: holds control character(s) {', '.join(map(repr, bad))}")


def _NAME_LO(name: str) -> None:
    _NAME(name, shortest=0)


class _NameLo(fields.Str):
    """A Lao name: ``""`` says there is none yet, as null does, and is kept as null (kept as
    "", it was a blank where the English name stands in: "ລາຍງານຊັກຊ້າ:  (DS_E)" in every
    deadline e-mail)."""

    def deserialize(self, value, attr=None, data=None, **kwargs):
        text = super().deserialize(value, attr, data, **kwargs)  # (checked as sent)
        # blank is none too (" " showed as a blank name); absent stays absent (marshmallow's
        # missing is falsy: a rename dropped the Lao name)
        return None if isinstance(text, str) and not text.strip() else text


class _Bool(fields.Bool):
    """A JSON boolean, ``true`` or ``false``: marshmallow's own reads "yes", "on", 1 and the like
    as true (``"digest": "yes"`` was stored), where a typo should be told."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not bool:
            raise ValidationError(f"must be true or false, not {value!r}")
        return value


def _phone(number: str) -> None:
    """A telephone number as people write one: digits (ASCII), spaces, +, -, ., (, ); "abc"
    was stored, and no one could call it."""
    if not re.fullmatch(r"\+?[0-9(][0-9 ()./-]{1,39}", number) or sum(c.isdigit() for c in number) < 3:
        raise ValidationError(f"{number!r} is not a telephone number (digits, spaces, + - . ( ), at most 40)")


def _one_of(choices):
    return validate.OneOf(choices, error="must be one of " + ", ".join(choices))


# --- metadata import (CONTRACT 3) ----------------------------------------------
# Only ``code`` is required by the schema: for an object that already exists,
# absent fields keep their current value; the importer checks that a *new*
# object has everything it needs.

class ParentLinkSchema(StrictSchema):
    """One parent of a unit and when: ``GET /api/orgUnits/{code}``'s ``hierarchy`` item."""
    parent = fields.Str(required=True, allow_none=True)
    valid_from = fields.Date(data_key="from", required=True)
    valid_to = fields.Date(data_key="to", allow_none=True)  # absent: the next one's from (or open)


class OrgUnitImportSchema(StrictSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(validate=_NAME)
    nameLo = _NameLo(allow_none=True, validate=_NAME_LO)
    parent = fields.Str(allow_none=True)
    parentFrom = fields.Date(allow_none=True)
    # every parent over time, oldest first (what GET /api/metadata gives a moved unit, so
    # that a new server takes its history too); instead of parentFrom, ``parent`` its last
    hierarchy = fields.List(fields.Nested(ParentLinkSchema), validate=validate.Length(min=1))
    openingDate = fields.Date()
    closedDate = fields.Date(allow_none=True)
    generated = _Bool()


class OutlierImportSchema(StrictSchema):
    enabled = _Bool(load_default=True)
    min = fields.Decimal(allow_none=True, load_default=None, as_string=True)
    max = fields.Decimal(allow_none=True, load_default=None, as_string=True)


class DataElementImportSchema(StrictSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(validate=_NAME)
    nameLo = _NameLo(allow_none=True, validate=_NAME_LO)
    valueType = fields.Str(validate=_one_of(VALUE_TYPES))
    aggregationType = fields.Str(validate=_one_of(AGGREGATION_TYPES))
    disaggregation = fields.List(fields.Str(validate=CODE), allow_none=True)
    outliers = fields.Nested(OutlierImportSchema, allow_none=True)


class DataSetImportSchema(StrictSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(validate=_NAME)
    nameLo = _NameLo(allow_none=True, validate=_NAME_LO)
    periodType = fields.Str(validate=_one_of(PERIOD_TYPES))
    dataElements = fields.List(fields.Str())
    # bounded: a level past the deepest a hierarchy has, or days past a century, can only be
    # a typing slip, and an unbounded one overflowed date arithmetic in every later check
    # whole numbers as JSON numbers (strict: 0.5 days was read as 0, "never closes")
    orgUnitLevel = fields.Int(allow_none=True, strict=True, validate=validate.Range(min=1, max=50))
    orgUnits = fields.List(fields.Str())
    timelyDays = fields.Int(strict=True, validate=validate.Range(min=0, max=36500))
    expiryDays = fields.Int(strict=True, validate=validate.Range(min=0, max=36500))


class ValidationRuleImportSchema(StrictSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(validate=_NAME)
    nameLo = _NameLo(allow_none=True, validate=_NAME_LO)
    importance = fields.Str(validate=_one_of(IMPORTANCES))
    left = fields.Str()
    operator = fields.Str(validate=_one_of(OPERATORS))
    right = fields.Str()
    missingValueStrategy = fields.Str(validate=_one_of(MISSING_VALUE_STRATEGIES))
    dataSet = fields.Str(allow_none=True)


def _letter(c: str) -> bool:
    """A letter or digit of any script, its marks included (Lao vowel and tone signs are
    marks, not letters: ``str.isalnum`` alone refuses nearly every Lao word)."""
    return c.isalnum() or unicodedata.category(c).startswith("M")


def _email(address: str) -> None:
    """An e-mail address, in any script (RFC 6531): marshmallow's Email refuses a local part
    with a combining mark, which nearly every Lao word has (vowel and tone signs).

    One '@'; a local part of up to 64 characters with no space, control or delimiter, and
    dots only between characters (RFC 5322's dot-atom: no '..', none first or last); a
    domain of dot-separated labels of letters, marks, digits and hyphens, one dot at least."""
    local, at, domain = address.rpartition("@")
    labels = domain.split(".")
    ok = (at and 0 < len(local) <= 64 and len(address) <= 254
          and not any(c.isspace() or unicodedata.category(c).startswith("C") or c in '@<>()[]\\,;:"'
                      for c in local)
          and all(local.split("."))
          and (len(labels) >= 2 or domain == "localhost")
          and all(label and not label.startswith("-") and not label.endswith("-")
                  and all(_letter(c) or c == "-" for c in label)
                  for label in labels))
    if not ok:
        raise ValidationError(f"{address!r} is not an e-mail address")


class FocalPointImportSchema(StrictSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(validate=_NAME)
    orgUnit = fields.Str()
    role = fields.Str(validate=_one_of(FOCAL_POINT_ROLES))
    email = fields.Str(allow_none=True, validate=_email)
    phone = fields.Str(allow_none=True, validate=_phone)
    language = fields.Str(validate=_one_of(LANGUAGES))
    digest = _Bool()


# the import document lists are loaded item by item so every bad item is reported
METADATA_LISTS = {
    "orgUnits": OrgUnitImportSchema,
    "dataElements": DataElementImportSchema,
    "dataSets": DataSetImportSchema,
    "validationRules": ValidationRuleImportSchema,
    "focalPoints": FocalPointImportSchema,
}


class FocalPointUpdateSchema(FocalPointImportSchema):
    """``PUT /api/focalPoints/{code}``: the code comes from the path. What GET adds and no
    one sets (``lastActiveAt``, learned from returns; ``retiredOn``, set by DELETE) is taken
    and ignored, as DHIS2 ignores read-only properties: a focal point fetched, edited and put
    back was a 400 "Unknown field"."""
    READ_ONLY = ("lastActiveAt", "retiredOn")
    code = fields.Str(validate=CODE)
    lastActiveAt = fields.Raw(allow_none=True)
    retiredOn = fields.Raw(allow_none=True)

    @post_load
    def _without_read_only(self, data: dict, **_) -> dict:
        return {k: v for k, v in data.items() if k not in self.READ_ONLY}


# --- users (CONTRACT 2) ----------------------------------------------------------

def _username(name: str) -> None:
    """Letters and digits of any script (a Lao name's vowel signs are marks), and '_', '.',
    '@', '-' after the first: 1-80 characters."""
    ok = (0 < len(name) <= 80 and name[0].isalnum()
          and all(_letter(c) or c in "_.@-" for c in name))
    if not ok:
        raise ValidationError("must be 1-80 letters (any script), digits, '_', '.', '@' or '-', "
                              "beginning with a letter or digit")
    # in any case and form: 'Admin' and 'ＡＤＭＩＮ' stood beside the bootstrap admin's
    # 'admin' in storedBy and submittedBy, as if the same person
    if unicodedata.normalize("NFKC", name).casefold() == BOOTSTRAP_ADMIN:
        raise ValidationError(f"{name!r} is reserved for the bootstrap admin token (STATNET_ADMIN_TOKEN)")


class UserSchema(StrictSchema):
    username = fields.Str(required=True, validate=_username)
    role = fields.Str(required=True, validate=_one_of(ROLES))
    orgUnit = fields.Str(allow_none=True)
    focalPoint = fields.Str(allow_none=True)

    @pre_load
    def one_spelling_of_a_name(self, data, **kwargs):
        # canonically equivalent spellings are one name (NFC): a Lao tone mark typed before the
        # vowel sign or after it looks the same, and made a second user beside the first
        if isinstance(data, dict) and isinstance(data.get("username"), str):
            return {**data, "username": unicodedata.normalize("NFC", data["username"])}
        return data

    @validates_schema
    def scoped_roles_need_org_unit(self, data, **kwargs):
        if data.get("role") in ("supervisor", "reporter") and not data.get("orgUnit"):
            raise ValidationError(f"a {data['role']} needs the org unit at the root of its scope",
                                  "orgUnit")


# --- data value sets (CONTRACT 4, application/json) -----------------------------------

class DataValueSchema(Schema):
    """One value; its own ``period``/``orgUnit`` override the header's."""

    class Meta:
        unknown = "raise"

    dataElement = fields.Raw(required=True)
    categoryOptionCombo = fields.Raw(allow_none=True)
    value = fields.Raw(required=True, allow_none=True)
    comment = fields.Raw(allow_none=True)
    period = fields.Raw(allow_none=True)
    orgUnit = fields.Raw(allow_none=True)
    # DHIS2 exports carry these; accepted so a DHIS2 payload imports unchanged
    attributeOptionCombo = fields.Raw(allow_none=True)
    storedBy = fields.Raw(allow_none=True)
    created = fields.Raw(allow_none=True)
    lastUpdated = fields.Raw(allow_none=True)
    followup = fields.Raw(allow_none=True)


def _number(x):
    if x is None:
        return None
    return int(x) if float(x).is_integer() else float(x)


OUTLIER = "OUTLIER"  # validation's outlier check (services/validation/checks.py), not a rule


def violations_out(found: list[dict]) -> dict:
    """A return's findings as the HTTP API shows them: ``violations`` of its validation
    rules (CONTRACT 4) and, apart, the ``outliers`` of its values against their expected
    range, LOW warnings as DHIS2's outlier detection is apart from its rule violations."""
    return {"violations": [violation_out(v) for v in found if v["rule"] != OUTLIER],
            "outliers": [violation_out(v) for v in found if v["rule"] == OUTLIER]}


def violation_out(v: dict) -> dict:
    """A violation (``ViolationSchema``) as the HTTP API shows it: submission and validation alike."""
    out = {"rule": v["rule"], "name": v.get("name"), "nameLo": v.get("name_lo"), "importance": v["importance"],
           "left": _number(v.get("left")), "operator": v["operator"], "right": _number(v.get("right")),
           "orgUnit": v.get("org_unit"), "period": v.get("period"), "message": v.get("message", "")}
    if v.get("data_element"):
        out["dataElement"] = v["data_element"]
        out["categoryOptionCombo"] = v.get("category_option_combo")
    if v.get("expected_min") is not None or v.get("expected_max") is not None:
        out["expected"] = {"min": _number(v.get("expected_min")), "max": _number(v.get("expected_max"))}
    return out
