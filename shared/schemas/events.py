"""Payloads of the events services exchange (CONTRACT section 9).

One message per return, never one per value: a return's values travel inside
its events, so validation and aggregation need no lookup to do their work.
The catalogue that maps (source, event type) to these schemas and their
``schema_version`` is ``shared.events.CATALOGUE``; ``docs/asyncapi.yaml`` is
generated from it.
"""
from marshmallow import ValidationError, fields, validate

from shared.schemas.common import EventSchema
from shared.schemas.metadata import IMPORTANCES, MetadataChangesSchema


class ReturnValues(fields.Field):
    """The values of a return: a list of ``{data_element, category_option_combo,
    org_unit, period, value, comment}``, all text (``comment`` may be null);
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
                       "comment": {"oneOf": [{"type": "string"}, {"type": "null"}]}}}}

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
    violations = fields.List(fields.Nested(ViolationSchema), required=True)


class ReturnRejectedSchema(ReturnRefSchema):
    """At least one HIGH violation: nothing of the return is aggregated."""
    violations = fields.List(fields.Nested(ViolationSchema), required=True)


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


class UserChangedSchema(EventSchema):
    """A user was created or its token rotated: caches of tokens drop it."""
    username = fields.Str(required=True)
    role = fields.Str(required=True)
    org_unit = fields.Str(allow_none=True, load_default=None)


MetadataChangedSchema = MetadataChangesSchema
