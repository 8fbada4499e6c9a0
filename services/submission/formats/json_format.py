"""DHIS2 data value set JSON (``application/json``)."""
from __future__ import annotations

import json

from services.submission.formats import (ParseError, RawReturn, RawValue, attribute_combo_problem, conflict,
                                         id_scheme_problem)
from shared.api import DuplicateField, json_object, json_whole_number, unstorable_fields

HEADER_FIELDS = {"dataSet", "period", "orgUnit", "completeDate", "dataValues",
                 # DHIS2 exports carry these; accepted so a DHIS2 payload imports unchanged
                 "attributeOptionCombo", "dataSetComplete", "id", "idScheme",
                 "dataElementIdScheme", "orgUnitIdScheme"}
VALUE_FIELDS = {"dataElement", "categoryOptionCombo", "value", "comment", "period", "orgUnit",
                "attributeOptionCombo", "storedBy", "created", "lastUpdated", "followup",
                "deleted"}  # DHIS2's (and GET /api/dataValueSets?includeDeleted's): true is a deletion


def _code(value):
    """A code sent as a JSON number (``"period": 202601``) is read as its text, as DHIS2's
    JSON reader does."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def parse(body: str) -> RawReturn:
    try:
        # a number's own digits, as DHIS2 reads a value: text. As a float, 123456789012345.678
        # was stored as ...45.67 and 0.1234567890123456789 refused as 0.12345678901234568
        doc = json.loads(body, parse_float=str, parse_constant=str, parse_int=json_whole_number,
                         object_pairs_hook=json_object)
    except DuplicateField as exc:
        raise ParseError([conflict("body", None, f"body is ambiguous: {exc}")]) from None
    except ValueError as exc:
        raise ParseError([conflict("body", None, f"body is not valid JSON: {exc}")]) from None
    except RecursionError:
        raise ParseError([conflict("body", None, "body is not valid JSON: nested too deeply")]) from None
    if not isinstance(doc, dict):
        raise ParseError([conflict("body", None, "body must be a JSON object (a data value set)")])
    # text PostgreSQL can't store (NUL, a lone surrogate): refused here, not by a consumer after
    # the 202; and alone, as no other conflict may echo that text (no answer could encode it)
    bad = unstorable_fields(doc, text=body)
    if bad:
        raise ParseError([conflict(where.removeprefix("body."), None, f"holds {what}") for where, what in bad])
    problems = [conflict(key, doc[key], f"unknown field {key!r} in the data value set")
                for key in doc if key not in HEADER_FIELDS]
    problems += filter(None, [attribute_combo_problem("attributeOptionCombo", doc.get("attributeOptionCombo")),
                              *(id_scheme_problem(name, doc.get(name))
                                for name in ("idScheme", "dataElementIdScheme", "orgUnitIdScheme"))])
    values = doc.get("dataValues", [])
    if not isinstance(values, list):
        problems.append(conflict("dataValues", None, "dataValues must be a list"))
        values = []
    raw = RawReturn(_code(doc.get("dataSet")), _code(doc.get("period")), _code(doc.get("orgUnit")),
                    doc.get("completeDate"))
    for i, item in enumerate(values):
        if not isinstance(item, dict):
            problems.append(conflict(f"dataValues[{i}]", None, f"dataValues[{i}] must be an object"))
            continue
        problems += [conflict(f"dataValues[{i}].{key}", item[key], f"unknown field {key!r} in dataValues[{i}]")
                     for key in item if key not in VALUE_FIELDS]
        aoc = attribute_combo_problem(f"dataValues[{i}].attributeOptionCombo", item.get("attributeOptionCombo"))
        if aoc:
            problems.append(aoc)
        deleted = item.get("deleted", False)
        if type(deleted) is not bool:
            problems.append(conflict(f"dataValues[{i}].deleted", deleted, "deleted must be true or false"))
            continue
        if "value" not in item and not deleted:
            problems.append(conflict(f"dataValues[{i}].value", None, f"dataValues[{i}] has no value"))
            continue
        raw.values.append(RawValue(i, _code(item.get("dataElement")), _code(item.get("categoryOptionCombo")),
                                   "" if deleted else item.get("value"), item.get("comment"),
                                   _code(item.get("period")), _code(item.get("orgUnit")),
                                   stored_by=item.get("storedBy"), followup=item.get("followup")))
    # a data value set whose every value names its own period (or unit) needs none in its
    # header: the first value's is the return's, as a CSV's first line's is (DHIS2 takes such
    # a set, and GET /api/dataValueSets exports one for several units or periods)
    for attr, key in (("period", "period"), ("org_unit", "orgUnit")):
        if key not in doc and raw.values and all(getattr(v, attr) not in (None, "") for v in raw.values):
            setattr(raw, attr, getattr(raw.values[0], attr))
    raw.problems = problems
    return raw
