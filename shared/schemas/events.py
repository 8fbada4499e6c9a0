"""Payloads of the events services exchange (CONTRACT section 9).

One message per return, never one per value: a return's values travel inside
its events, so validation and aggregation need no lookup to do their work.
The catalogue that maps (source, event type) to these schemas and their
``schema_version`` is ``shared.events.CATALOGUE``; ``docs/asyncapi.yaml`` is
generated from it.
"""
import math
from decimal import Decimal

from marshmallow import ValidationError, fields, missing, validate

from shared.schemas.common import EventSchema
from shared.schemas.metadata import IMPORTANCES, MetadataChangesSchema


class ReturnValues(fields.Field):
    """The values of a return: a list of ``{data_element, category_option_combo,
    org_unit, period, value, comment, stored_by?, followup?}``, all text (``comment`` may be
    null; ``stored_by``, DHIS2's storedBy, only where the sender named one) but ``followup``,
    DHIS2's mark for a data-quality follow-up, ``true`` where it is set;
    ``value == ""`` deletes the value.

    Checked with plain Python rather than a nested schema per value: every
    consumer of every return event loads hundreds of them, and the nested
    schema was a fifth of all CPU under load (profiled). The contract of each
    value is the same; only the cost differs.
    """

    REQUIRED = ("data_element", "category_option_combo", "org_unit", "period", "value")
    json_schema = {"type": "array", "items": {
        "type": "object", "required": list(REQUIRED),
        "properties": {**{k: {"type": "string"} for k in REQUIRED},
                       "comment": {"oneOf": [{"type": "string"}, {"type": "null"}]},
                       "stored_by": {"type": "string"}, "followup": {"type": "boolean"}}}}

    def _check(self, value):
        if not isinstance(value, list):
            raise ValidationError("values must be a list")
        for i, item in enumerate(value):
            if type(item) is not dict:
                raise ValidationError(f"values[{i}] must be an object")
            for key in self.REQUIRED:
                if type(item.get(key)) is not str:
                    raise ValidationError(f"values[{i}].{key} must be text, not {item.get(key)!r}")
            comment = item.get("comment")
            if comment is not None and type(comment) is not str:
                raise ValidationError(f"values[{i}].comment must be text or null")
            if "stored_by" in item and type(item["stored_by"]) is not str:
                raise ValidationError(f"values[{i}].stored_by must be text")
            if "followup" in item and type(item["followup"]) is not bool:
                raise ValidationError(f"values[{i}].followup must be true or false")
        return value

    def _deserialize(self, value, attr, data, **kwargs):
        return self._check(value)

    def _serialize(self, value, attr, obj, **kwargs):
        return self._check(value)


class ViolationSchema(EventSchema):
    """A failed check. ``left``/``right`` are the evaluated sides (None when missing)."""
    rule = fields.Str(required=True)
    importance = fields.Str(required=True, validate=validate.OneOf(IMPORTANCES))
    left = fields.Float(allow_none=True, load_default=None)
    operator = fields.Str(required=True)
    right = fields.Float(allow_none=True, load_default=None)
    org_unit = fields.Str(required=True)
    period = fields.Str(required=True)
    message = fields.Str(load_default="")
    # added in place (compatible): the rule's names for messages in the reader's language,
    # and for a value check (type, outlier) the value it is about and its expected range
    name = fields.Str(allow_none=True, load_default=None)
    name_lo = fields.Str(allow_none=True, load_default=None)
    data_element = fields.Str(allow_none=True, load_default=None)
    category_option_combo = fields.Str(allow_none=True, load_default=None)
    expected_min = fields.Float(allow_none=True, load_default=None)
    expected_max = fields.Float(allow_none=True, load_default=None)


class FlatItems(fields.Field):
    """A list of flat objects, each checked against ``item_schema``'s fields with plain
    Python, as that schema would load it (required fields, types, choices, nulls, defaults;
    unknown keys left out).

    For the lists every consumer of every return event loads: through marshmallow's nested
    schema a violation cost ~60 us to emit and ~30 us for each consumer to load, so a
    return with a dozen outlier warnings spent 0.8 ms being emitted and 0.4 ms in each of
    four consumers (profiled at 50 returns/s, where most returns carry some). The schema
    stays the one declaration of the item (and the AsyncAPI document shows it).
    Understands the field types a flat item has: text (with ``OneOf``) and numbers.
    """

    def __init__(self, item_schema: type, **kwargs):
        super().__init__(**kwargs)
        self.item_schema = item_schema
        self._spec = []
        for name, f in item_schema().fields.items():
            if isinstance(f, fields.Float):
                kind = float
            elif isinstance(f, fields.String):
                kind = str
            else:
                raise TypeError(f"FlatItems: {item_schema.__name__}.{name} is {type(f).__name__}")
            choices = next((v.choices for v in f.validators if isinstance(v, validate.OneOf)), None)
            self._spec.append((name, kind, f.required, f.allow_none, f.load_default, choices))

    def _check(self, value, attr):
        if not isinstance(value, list):
            raise ValidationError(f"{attr} must be a list")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise ValidationError(f"{attr}[{i}] must be an object")
            row = {}
            for name, kind, required, allow_none, default, choices in self._spec:
                v = item.get(name, missing)
                if v is missing:
                    if required:
                        raise ValidationError(f"{attr}[{i}].{name} is required")
                    if default is missing:
                        continue
                    v = default() if callable(default) else default
                elif v is None:
                    if not allow_none:
                        raise ValidationError(f"{attr}[{i}].{name} may not be null")
                elif kind is float:
                    if type(v) is bool or not isinstance(v, (int, float, Decimal, str)):
                        raise ValidationError(f"{attr}[{i}].{name} must be a number, not {v!r}")
                    try:
                        v = float(v)
                    except ValueError:
                        raise ValidationError(f"{attr}[{i}].{name} must be a number, not {v!r}") from None
                    if not math.isfinite(v):
                        raise ValidationError(f"{attr}[{i}].{name} must be a finite number, not {v!r}")
                elif type(v) is not str:
                    raise ValidationError(f"{attr}[{i}].{name} must be text, not {v!r}")
                elif choices is not None and v not in choices:
                    raise ValidationError(f"{attr}[{i}].{name} must be one of {', '.join(choices)}, not {v!r}")
                row[name] = v
            out.append(row)
        return out

    def _deserialize(self, value, attr, data, **kwargs):
        return self._check(value, attr or self.name)

    def _serialize(self, value, attr, obj, **kwargs):
        return self._check(value, attr or self.name)


class ReturnRefSchema(EventSchema):
    """What every event about one return says about it."""
    return_id = fields.Str(required=True)
    # submission's sequence number: a later return for the same values has a
    # higher one, so consumers can ignore an older return that arrives late
    seq = fields.Int(required=True)
    data_set = fields.Str(required=True)
    org_unit = fields.Str(required=True)
    period = fields.Str(required=True)
    received_at = fields.AwareDateTime(required=True)
    on_time = fields.Bool(required=True)
    submitted_by = fields.Str(required=True)


class ReturnReceivedSchema(ReturnRefSchema):
    values = ReturnValues(required=True)


class ReturnValidatedSchema(ReturnRefSchema):
    """Accepted: no HIGH violation. MEDIUM/LOW ones ride along as warnings."""
    values = ReturnValues(required=True)
    violations = FlatItems(ViolationSchema, required=True)


class ReturnRejectedSchema(ReturnRefSchema):
    """At least one HIGH violation: nothing of the return is aggregated."""
    violations = FlatItems(ViolationSchema, required=True)


class ImportCountSchema(EventSchema):
    imported = fields.Int(required=True)
    updated = fields.Int(required=True)
    ignored = fields.Int(required=True)
    deleted = fields.Int(required=True)


class ReturnAggregatedSchema(EventSchema):
    """The return's values are in every total: analytics already shows them."""
    return_id = fields.Str(required=True)
    data_set = fields.Str(required=True)
    org_unit = fields.Str(required=True)
    period = fields.Str(required=True)
    import_count = fields.Nested(ImportCountSchema, required=True)
    aggregated_at = fields.AwareDateTime(required=True)


class PlaceSchema(EventSchema):
    org_unit = fields.Str(required=True)
    period = fields.Str(required=True)


class HistoryLoadedSchema(EventSchema):
    """A chunk of past values is in the aggregates: each place it gave a value counts as
    reported (completeness already; notify's deadline check stops chasing it). ``cleared``:
    the places it deleted values at, or which report nothing any more (validation takes
    every changed place in again; absent from a producer before it: none)."""
    batch = fields.Str(required=True)
    data_set = fields.Str(required=True)
    places = FlatItems(PlaceSchema, required=True)
    cleared = FlatItems(PlaceSchema, load_default=list)
    loaded_at = fields.AwareDateTime(required=True)


class UserChangedSchema(EventSchema):
    """A user was created or its token rotated: caches of tokens drop what the registry
    confirmed before ``changed_at`` (the registry's own time of the change; absent from a
    producer before it: everything of the user's)."""
    username = fields.Str(required=True)
    role = fields.Str(required=True)
    org_unit = fields.Str(allow_none=True, load_default=None)
    changed_at = fields.AwareDateTime(allow_none=True, load_default=None)


MetadataChangedSchema = MetadataChangesSchema
