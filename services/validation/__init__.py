"""Validation: checks each return against the metadata (types, rules, outliers)
and accepts or rejects it, once."""
