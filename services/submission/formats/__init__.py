"""The import formats, each parsed into one internal shape (``RawReturn``).

Parsing only reads the format: it names each value's fields as sent and
reports what it cannot read. Whether the codes exist, the types fit and the
sender may send them is decided afterwards, once for all formats, by
``services.submission.intake.check``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RawValue:
    index: int                     # position in the body, for error messages
    data_element: object
    combo: object = None           # None: the element's only combo
    value: object = None
    comment: object = None
    period: object = None          # None: the return's period
    org_unit: object = None        # None: the return's org unit


@dataclass
class RawReturn:
    data_set: object = None
    period: object = None
    org_unit: object = None
    complete_date: object = None
    values: list[RawValue] = field(default_factory=list)


class ParseError(Exception):
    """The body can't be read as its format; ``conflicts`` lists why."""

    def __init__(self, conflicts: list[dict]):
        super().__init__("; ".join(c["message"] for c in conflicts))
        self.conflicts = conflicts


def conflict(obj: str, value, message: str) -> dict:
    return {"object": obj, "value": None if value is None else str(value), "message": message}


class UnsupportedMediaType(Exception):
    pass


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def parse(content_type: str | None, body: str, params: dict) -> RawReturn:
    from services.submission.formats import json_format

    kind = media_type(content_type)
    if kind == "application/json":
        return json_format.parse(body)
    raise UnsupportedMediaType(kind or "(none)")
