"""How services answer the gateway: an explicit reply envelope over RPC.

A service's API method returns ``reply(body, status)``; a refusal raises
``ApiError`` (or ``Forbidden``), which ``@api_rpc`` turns into the same
envelope. The gateway maps the envelope onto an HTTP response without
knowing anything about the domain, and nameko never logs an expected
refusal as a crash.
"""
from __future__ import annotations

import functools
import logging
import re

from nameko.rpc import rpc

from shared import metrics
from shared.auth import Forbidden, Principal
from shared.events import is_transient
from shared.local import CallerGaveUp

log = logging.getLogger(__name__)

JSON = "application/json"
MAX_BODY = 5 * 1024 * 1024  # a request body, as sent (CONTRACT 4: 413 above 5 MB)


class ApiError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(body.get("message") or body)
        self.status = status
        self.body = body


def reply(body, status: int = 200, content_type: str = JSON, headers: dict | None = None) -> dict:
    return {"status": status, "body": body, "content_type": content_type, "headers": headers or {}}


def error(status: int, message: str, **extra) -> ApiError:
    return ApiError(status, {"status": "ERROR", "httpStatusCode": status, "message": message, **extra})


def _unstorable(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone UTF-16 surrogate (a \\ud800-\\udfff escape), which is no character"
    return None


def json_whole_number(text: str):
    """How a JSON document's whole numbers are read (``json.loads(parse_int=...)``): as an
    int, or past the 4,300 digits Python converts, as their text, which the field holding
    it refuses by name (json.loads raised, and the answer was the interpreter's advice to
    raise its limit, as if the body were not JSON)."""
    return int(text) if len(text) <= 4000 else text


class DuplicateField(ValueError):
    """A JSON object naming one field twice."""


def json_object(pairs: list[tuple[str, object]]) -> dict:
    """How a JSON document's objects are read (``json.loads(object_pairs_hook=...)``): a field
    named twice is refused, not settled by the last one silently (``"dataValues"`` twice,
    the second empty, stored a return of nothing; RFC 8259 leaves the reading open)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise DuplicateField(f"field {twice!r} appears twice in one object: which one is meant is unclear")
    return obj


# How JSON text decodes to such text: a NUL or a surrogate written as an escape (a raw
# control character is no JSON, and the text itself is decoded already). An escaped
# backslash before "u0000" (the six characters, not a NUL) matches too: the walk decides.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def unstorable_fields(obj, where: str = "body", text: str | None = None) -> list[tuple[str, str]]:
    """(where, what) for each text of a decoded JSON document that no text column of
    PostgreSQL, nor any UTF-8 answer, can hold: a NUL character (``\\u0000``), or half of a
    surrogate pair (``\\ud800``, JSON lets one be escaped). Said up front as a 400 naming
    where, not found by the database (or, in a return, by a consumer after the 202) as a 500;
    the answer never echoes the text itself, which could not be encoded. Walked with a list,
    not by recursion: a document nested a thousand deep is no RecursionError.

    ``text``: the JSON the document was decoded from. When it holds no NUL, no lone
    surrogate and no escape of either, nothing in the document can, and it is not walked:
    the walk was 0.15 of the 0.65 ms of reading a return of a hundred values (tests/bench)."""
    if text is not None and _unstorable(text) is None and not _UNSTORABLE_ESCAPE.search(text):
        return []
    out, todo = [], [(where, obj)]
    while todo:
        at, item = todo.pop()
        if isinstance(item, str):
            what = _unstorable(item)
            if what:
                out.append((at, what))
        elif isinstance(item, dict):
            for k, v in reversed(list(item.items())):
                what = _unstorable(str(k))
                if what:
                    todo.append((f"{at}.{k!a}", k))  # the key in escapes: it can't be sent as it is
                else:
                    todo.append((f"{at}.{k}", v))
        elif isinstance(item, list):
            todo.extend((f"{at}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return out


# DHIS2's identifier schemes: statnet identifies everything by code, and says so rather than
# read a UID as a code (intake, history loads and the data value export alike)
ID_SCHEMES = ("idScheme", "dataElementIdScheme", "orgUnitIdScheme", "categoryOptionComboIdScheme",
              "dataSetIdScheme")
# DHIS2's two names for the import strategy (``strategy``: ImportOptions.setStrategy)
STRATEGY_PARAMETERS = ("importStrategy", "strategy")
# DHIS2's default category option combo, which is its default attribute option combo too:
# the UID every DHIS2 instance gives it (an export by code names it so when it has no code)
DEFAULT_COMBO_UID = "HllvX50cXC0"
DEFAULT_ATTRIBUTE_COMBOS = ("", "default", DEFAULT_COMBO_UID)


def id_scheme_refusal(name: str, value) -> str | None:
    """Why an identifier scheme other than codes is refused; None for codes (or none given)."""
    if value is None or str(value).strip().upper() == "CODE":
        return None
    return f"{name} {value!r} is not supported: statnet identifies everything by code (idScheme=CODE)"


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def flag(params: dict, name: str) -> bool | None:
    """A true/false query parameter, read as Spring reads DHIS2's (true/1/yes/on, any case;
    false/0/no/off or empty); None when absent. Anything else is a 400 naming it: a
    ``dryRun=ture`` that silently stored the return would be the worst reading."""
    raw = params.get(name)
    if raw is None:
        return None
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise error(400, f"{name}: {raw!r} is not true or false")


def not_found(what: str) -> ApiError:
    return error(404, f"{what} not found")


def api_rpc(fn):
    """An RPC method serving the gateway: first argument after self is the principal dict."""

    @functools.wraps(fn)
    def wrapper(self, principal, *args, **kwargs):
        # timing and errors are recorded for every RPC by shared.delivery.Database
        service = getattr(self, "name", "?")
        try:
            return fn(self, Principal.from_dict(principal), *args, **kwargs)
        except ApiError as exc:
            return reply(exc.body, exc.status)
        except Forbidden as exc:
            return reply({"status": "ERROR", "httpStatusCode": 403, "message": str(exc)}, 403)
        except CallerGaveUp as exc:
            # (the caller has answered 503 already: this answer is for the log)
            log.warning("%s.%s: %s", service, fn.__name__, exc)
            return reply({"status": "ERROR", "httpStatusCode": 503, "message": f"{exc}; retry"}, 503,
                         headers={"Retry-After": "1"})
        except Exception as exc:
            if not is_transient(exc):
                raise
            # the database or broker went away mid-call; nothing was committed,
            # so the client may simply try again
            metrics.rpc_errors_total.labels(service=service, method=fn.__name__).inc()
            log.warning("%s.%s: transient failure, answered 503: %s", service, fn.__name__, exc)
            return reply({"status": "ERROR", "httpStatusCode": 503,
                          "message": f"temporarily unavailable ({type(exc).__name__}); retry"},
                         503, headers={"Retry-After": "1"})

    return rpc(wrapper)
