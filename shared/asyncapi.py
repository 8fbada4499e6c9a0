"""The AsyncAPI document of statnet's events, generated from the catalogue.

``docs/asyncapi.json`` is this document committed; a test fails when the
catalogue, a payload schema or a subscription changes without regenerating
it (``statnet asyncapi > docs/asyncapi.json``).
"""
from __future__ import annotations

import json

from marshmallow import Schema, fields

from shared import serialization, topology
from shared.events import CATALOGUE, EnvelopeSchema


def _field(f: fields.Field) -> dict:
    if hasattr(f, "json_schema"):  # a custom field that describes itself
        out = dict(f.json_schema)
    elif hasattr(f, "item_schema"):  # a list of flat objects (shared.schemas.events.FlatItems)
        out = {"type": "array", "items": _schema(f.item_schema())}
    elif isinstance(f, fields.Nested):
        schema = f.nested() if callable(f.nested) and not isinstance(f.nested, type) else f.nested
        out = _schema(schema if isinstance(schema, Schema) else schema())
    elif isinstance(f, fields.List):
        out = {"type": "array", "items": _field(f.inner)}
    elif isinstance(f, fields.Dict):
        out = {"type": "object"}
    elif isinstance(f, fields.AwareDateTime):
        out = {"type": "string", "format": "date-time"}
    elif isinstance(f, fields.Date):
        out = {"type": "string", "format": "date"}
    elif isinstance(f, fields.Decimal):
        out = {"type": "string", "format": "decimal"}
    elif isinstance(f, fields.Boolean):
        out = {"type": "boolean"}
    elif isinstance(f, fields.Integer):
        out = {"type": "integer"}
    elif isinstance(f, fields.Float):
        out = {"type": "number"}
    else:
        out = {"type": "string"}
    if f.allow_none:
        out = {"oneOf": [out, {"type": "null"}]}
    return out


def _schema(schema: Schema) -> dict:
    props = {name: _field(f) for name, f in schema.fields.items()}
    required = sorted(name for name, f in schema.fields.items() if f.required)
    out = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def document(service_classes) -> str:
    subscribers: dict[tuple[str, str], list[str]] = {}
    for cls in service_classes:
        for source, event, handler in topology.subscriptions(cls, broadcast=False):
            subscribers.setdefault((source, event), []).append(f"{cls.name}.{handler}")
        for source, event, handler in topology.subscriptions(cls, broadcast=True):
            subscribers.setdefault((source, event), []).append(f"{cls.name}.{handler} (every instance)")
    channels, messages = {}, {}
    envelope = _schema(EnvelopeSchema())
    for (source, name), kind in sorted(CATALOGUE.items()):
        key = f"{source}.{name}"
        payload = json.loads(json.dumps(envelope))
        payload["properties"]["data"] = _schema(kind.schema())
        payload["properties"]["schema_version"] = {"type": "integer", "const": kind.schema_version}
        messages[key] = {"name": name, "title": key, "summary": kind.summary,
                         # what the wire says: JSON, named for the serializer that reads it
                         # (shared.serialization: decimals and dates as text)
                         "contentType": serialization.CONTENT_TYPE, "payload": payload}
        channels[key] = {
            "address": name,
            "description": f"Topic exchange {source}.events, routing key {name}. "
                           f"Consumed by: {', '.join(sorted(subscribers.get((source, name), []))) or 'nobody'}.",
            "bindings": {"amqp": {"is": "routingKey",
                                  "exchange": {"name": f"{source}.events", "type": "topic",
                                               "durable": True, "autoDelete": False}}},
            "messages": {name: {"$ref": f"#/components/messages/{key}"}},
        }
    doc = {
        "asyncapi": "3.0.0",
        "info": {"title": "statnet events", "version": "1",
                 "description": "Events statnet services exchange over RabbitMQ. Every event is "
                                "published from its service's outbox with publisher confirms; "
                                "consumers are idempotent by event_id."},
        "channels": channels,
        "components": {"messages": messages},
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
