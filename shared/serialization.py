"""The wire format of every message statnet sends: plain JSON.

kombu's own ``json`` decoder runs a Python hook on every object of every
message (to revive its typed markers); a return's events hold hundreds of
objects, and profiling showed that hook among the top costs. statnet's
payloads are plain JSON already (marshmallow dumps them), so the decoder
here is ``json.loads`` itself. Registered with nameko through its
``SERIALIZERS`` setting (``Settings.to_nameko``); consumers accept kombu's
``json`` too, so tools and older messages still decode.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

NAME = "statnet-json"
CONTENT_TYPE = "application/x-statnet+json"


def plain(o):
    """The JSON form of what json cannot encode itself: dates as ISO text, decimals as text."""
    if isinstance(o, (dt.datetime, dt.date)):
        return o.isoformat()
    if isinstance(o, (decimal.Decimal, uuid.UUID)):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def dumps(obj) -> str:
    return json.dumps(obj, default=plain, ensure_ascii=False, separators=(",", ":"))


def loads(data):
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return json.loads(data)


NAMEKO_CONFIG = {NAME: {"encoder": "shared.serialization.dumps", "decoder": "shared.serialization.loads",
                        "content_type": CONTENT_TYPE, "content_encoding": "utf-8"}}


def register() -> None:
    """For code that publishes outside a nameko container (CLI tools, tests)."""
    import kombu.serialization

    kombu.serialization.register(NAME, dumps, loads, content_type=CONTENT_TYPE, content_encoding="utf-8")
