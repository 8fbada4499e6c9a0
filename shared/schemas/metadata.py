"""Metadata as the registry publishes it and every replica stores it.

These are the *state* shapes (what a unit, element, data set... is now), used by
the ``metadata_changed`` event and by the registry's catch-up RPC alike, so a
replica has one way to apply them. The API import document (camelCase, with
references by code and ``parentFrom``) is ``shared.schemas.api.MetadataImportSchema``.
"""
from marshmallow import fields, validate

from shared.schemas.common import CODE, EventSchema

VALUE_TYPES = ("INTEGER", "INTEGER_ZERO_OR_POSITIVE", "NUMBER", "PERCENTAGE", "BOOLEAN", "TEXT")
AGGREGATION_TYPES = ("SUM", "AVERAGE", "AVERAGE_SUM_ORG_UNIT", "LAST", "NONE")
PERIOD_TYPES = ("Monthly", "Quarterly", "Yearly")
IMPORTANCES = ("HIGH", "MEDIUM", "LOW")
OPERATORS = ("equal_to", "not_equal_to", "greater_than", "greater_than_or_equal_to",
             "less_than", "less_than_or_equal_to")
MISSING_VALUE_STRATEGIES = ("SKIP_IF_ANY_VALUE_MISSING", "SKIP_IF_ALL_VALUES_MISSING", "NEVER_SKIP")
FOCAL_POINT_ROLES = ("supervisor", "reporter")
LANGUAGES = ("lo", "en")
ROLES = ("admin", "operator", "supervisor", "reporter")


class OrgUnitPathSchema(EventSchema):
    """Where a unit sits in the hierarchy from ``valid_from`` until ``valid_to``.

    ``path`` lists the codes from the root down to the unit, ``/LA/03/0301/``,
    so "X is in the subtree of Y" is a prefix test that a btree index answers
    with a range scan. ``valid_to`` is exclusive; None means still valid.
    """
    path = fields.Str(required=True)
    level = fields.Int(required=True, validate=validate.Range(min=1))
    valid_from = fields.Date(required=True)
    valid_to = fields.Date(allow_none=True, load_default=None)


class OrgUnitStateSchema(EventSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(required=True)
    name_lo = fields.Str(allow_none=True, load_default=None)
    opening_date = fields.Date(required=True)
    closed_date = fields.Date(allow_none=True, load_default=None)
    generated = fields.Bool(load_default=False)
    paths = fields.List(fields.Nested(OrgUnitPathSchema), required=True)
    version = fields.Int(required=True)


class OutlierSettingsSchema(EventSchema):
    enabled = fields.Bool(load_default=True)
    min = fields.Decimal(allow_none=True, load_default=None, as_string=True)
    max = fields.Decimal(allow_none=True, load_default=None, as_string=True)


class DataElementStateSchema(EventSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(required=True)
    name_lo = fields.Str(allow_none=True, load_default=None)
    value_type = fields.Str(required=True, validate=validate.OneOf(VALUE_TYPES))
    aggregation_type = fields.Str(required=True, validate=validate.OneOf(AGGREGATION_TYPES))
    combos = fields.List(fields.Str(validate=CODE), required=True)
    outliers = fields.Nested(OutlierSettingsSchema, load_default=dict)
    version = fields.Int(required=True)


class DataSetStateSchema(EventSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(required=True)
    name_lo = fields.Str(allow_none=True, load_default=None)
    period_type = fields.Str(required=True, validate=validate.OneOf(PERIOD_TYPES))
    data_elements = fields.List(fields.Str(), required=True)
    org_unit_level = fields.Int(allow_none=True, load_default=None)
    org_units = fields.List(fields.Str(), load_default=list)
    timely_days = fields.Int(load_default=0)
    expiry_days = fields.Int(load_default=0)
    version = fields.Int(required=True)
    # a unit taken out of org_units -> the day it was (YYYY-MM-DD): assigned for the periods
    # begun before it (absent in a payload of the version before: none)
    assignment_ends = fields.Dict(keys=fields.Str(), values=fields.Str(validate=validate.Regexp(r"^\d{4}-\d{2}-\d{2}$")),
                                  load_default=dict)


class ValidationRuleStateSchema(EventSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(required=True)
    name_lo = fields.Str(allow_none=True, load_default=None)
    importance = fields.Str(required=True, validate=validate.OneOf(IMPORTANCES))
    left = fields.Str(required=True)
    operator = fields.Str(required=True, validate=validate.OneOf(OPERATORS))
    right = fields.Str(required=True)
    missing_value_strategy = fields.Str(required=True, validate=validate.OneOf(MISSING_VALUE_STRATEGIES))
    data_set = fields.Str(allow_none=True, load_default=None)
    version = fields.Int(required=True)


class FocalPointStateSchema(EventSchema):
    code = fields.Str(required=True, validate=CODE)
    name = fields.Str(required=True)
    org_unit = fields.Str(required=True)
    role = fields.Str(required=True, validate=validate.OneOf(FOCAL_POINT_ROLES))
    email = fields.Str(allow_none=True, load_default=None)
    phone = fields.Str(allow_none=True, load_default=None)
    language = fields.Str(load_default="lo", validate=validate.OneOf(LANGUAGES))
    digest = fields.Bool(load_default=False)
    version = fields.Int(required=True)
    retired_on = fields.Date(allow_none=True, load_default=None)  # (absent before retirement was)


class MetadataChangesSchema(EventSchema):
    """Everything that changed in the registry between version ``since`` and ``version``.

    Each
    object carries the version at which it last changed, so replicas can apply
    changes in any order and keep the newest of each object.
    """
    since = fields.Int(required=True)
    version = fields.Int(required=True)
    org_units = fields.List(fields.Nested(OrgUnitStateSchema), load_default=list)
    data_elements = fields.List(fields.Nested(DataElementStateSchema), load_default=list)
    data_sets = fields.List(fields.Nested(DataSetStateSchema), load_default=list)
    validation_rules = fields.List(fields.Nested(ValidationRuleStateSchema), load_default=list)
    focal_points = fields.List(fields.Nested(FocalPointStateSchema), load_default=list)
