"""Pieces every schema uses."""
from marshmallow import EXCLUDE, RAISE, Schema, validate

# Identifiers by code. Codes travel inside paths ("/LA/03/"), rule expressions
# ("#{POP.M}") and analytics queries ("dx=POP.M;HH&ou=03;0301"), so the
# separators those use ('/', '.', ';', '{', '}') and whitespace are refused.
# \Z, not $: "$" lets a trailing newline through ("ABC\n" was a code)
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,49}\Z"
CODE = validate.Regexp(CODE_PATTERN, error="must be 1-50 Latin letters (A-Z, a-z), digits 0-9, '_' or '-' "
                                           "(starting with a letter or digit)")


class StrictSchema(Schema):
    """Unknown fields are an error at every boundary, never silently dropped."""

    class Meta:
        unknown = RAISE


class EventSchema(Schema):
    """Event payloads tolerate fields they don't know: a newer producer may add
    fields (a compatible change that keeps ``schema_version``) before every
    consumer is upgraded. Removing or retyping a field bumps ``schema_version``."""

    class Meta:
        unknown = EXCLUDE
