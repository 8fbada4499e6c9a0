"""The gateway's HTTP entrypoint: JSON errors, request metrics, no HTML pages, and
request bodies read before a worker is taken.

nameko hands a request to a worker (``STATNET_MAX_WORKERS`` of them) and the worker read
the body: 21 uploads sent slowly, or stalled after their first byte, held every worker,
and every other request, ``/health`` included, waited for as long as they did (the
server had no socket timeout: for ever). A body is now read by the connection's own green
thread, which costs no worker, within a deadline its size earns, and within a budget of
bytes buffered at once; a worker starts once it is all here."""
from __future__ import annotations

import io
import json
import logging
import socket
import time

import eventlet
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.wrappers import Request, Response

from shared import metrics, serialization
from shared.api import MAX_BODY
from shared.auth import token_hash

log = logging.getLogger(__name__)


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"status": "ERROR", "httpStatusCode": status, "message": message, **extra}
        # a 401 says how to authenticate (RFC 9110), as DHIS2's does; a 503 when to try again
        self.headers = ({"WWW-Authenticate": 'Bearer realm="statnet"'} if status == 401
                        else {"Retry-After": "5"} if status == 503 else headers)

    def response(self) -> Response:
        return json_response(self.body, self.status, self.headers)


# the route a request to no route of the API is handed to, with its routing error, to have
# its token checked first: an unknown token got the 404 or 405 (with Allow), so anyone
# could map the API's routes and methods without one (CONTRACT 2: unknown token, 401)
UNMATCHED = "/.unmatched"
ROUTING_ERROR = "statnet.routing_error"


def routing_error(request) -> HttpError:
    """The 404 or 405 (with Allow) the request's path and method got from the router."""
    exc = request.environ.get(ROUTING_ERROR) or NotFound()  # (none: the inner route asked for from outside)
    allowed = getattr(exc, "valid_methods", None)
    return HttpError(exc.code, f"{exc.name}: {request.method} {request.path}",
                     headers={"Allow": ", ".join(allowed)} if exc.code == 405 and allowed else None)


IDLE_SECONDS = 60              # a connection silent this long, mid-request or between, is closed
BODY_GRACE_SECONDS = 30        # a body's deadline: this, and a second per MIN_BYTES_PER_SECOND
MIN_BYTES_PER_SECOND = 2048    # (a district's slow line; 5 MB: 43 minutes)
BUFFERED_AT_ONCE = 20 * MAX_BODY  # bytes of bodies held while read and handled


class _Budget:
    """Bytes of request bodies held at once (green threads: no lock, nothing yields between
    the test and the taking)."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give_back(self, n: int) -> None:
        self.held -= n


_BODY_METHODS = ("POST", "PUT", "PATCH")
_SLICE = 64 * 1024  # a body is read, held and timed this much at a time


MISSING_TOKEN = "missing bearer token: send 'Authorization: Bearer <token>'"
UNKNOWN_TOKEN = "unknown or rotated token"


class _RefusedTokens:
    """Tokens the registry said it does not know, for a while: an upload carrying one is
    refused before its body is read. A district system left with a rotated token sent its
    5 MB return again and again, and each was read whole (a worker looks a token up, after
    the body is in) only to be a 401. Only what the registry refused is kept, by hash, a
    bounded number: a token issued later is new, never one refused before."""

    SECONDS = 300.0
    MOST = 10_000

    def __init__(self):
        self._until: dict[str, float] = {}

    def remember(self, key: str) -> None:
        if len(self._until) >= self.MOST:
            now = time.monotonic()
            self._until = {k: t for k, t in self._until.items() if t > now}
            while len(self._until) >= self.MOST:  # (a flood of made-up tokens: the oldest go)
                del self._until[next(iter(self._until))]
        self._until[key] = time.monotonic() + self.SECONDS

    def holds(self, key: str) -> bool:
        until = self._until.get(key)
        return until is not None and until > time.monotonic()


REFUSED_TOKENS = _RefusedTokens()


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if it holds one."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _plain(o):
    try:
        return serialization.plain(o)
    except TypeError:
        return str(o)


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    # encoded as on the wire (shared.serialization), so a reply reads the same whether it
    # came over RPC or from a container in this process (shared.local)
    return Response(json.dumps(body, ensure_ascii=False, default=_plain), status=status,
                    headers=headers, content_type="application/json; charset=utf-8")


class _JsonErrorsApp(WsgiApp):
    """nameko's WSGI app, with routing errors (404, 405) answered as JSON too."""

    def __call__(self, environ, start_response):
        nul = _nul_in(environ)
        if nul:  # PostgreSQL stores no NUL in text: refused here, never a 500 from the database
            return json_response({"status": "ERROR", "httpStatusCode": 400,
                                  "message": f"the request's {nul} holds a NUL character"}, 400)(environ, start_response)
        path = environ.get("PATH_INFO", "")
        if len(path) > 1 and path.endswith("/") and not path.endswith("//"):
            # DHIS2 (Spring) serves /api/analytics/ as /api/analytics: a client adding the
            # slash got a 404 here (werkzeug's strict slashes only redirect the other way)
            environ["PATH_INFO"] = path[:-1]
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
        except HTTPException as exc:
            environ[ROUTING_ERROR] = exc
            if environ.get("PATH_INFO", "").startswith("/api/"):
                if bearer_token(environ.get("HTTP_AUTHORIZATION", "")) is None:
                    # every /api/ call without a token is a 401, one to no route too: what
                    # the API holds is not told to a caller who has not said who they are
                    return _answer(request, UNMATCHED, HttpError(401, MISSING_TOKEN))(environ, start_response)
                unmatched = next((p for p in self.server._providers if getattr(p, "url", None) == UNMATCHED), None)
                if unmatched is not None:  # its token checked by a worker, then the same answer
                    request.path_values = {}
                    return unmatched.handle_request(request)(environ, start_response)
            return routing_error(request).response()(environ, start_response)
        request.path_values = values
        expected = _expected_body(environ)
        if not expected:
            return provider.handle_request(request)(environ, start_response)
        if environ.get("PATH_INFO", "").startswith("/api/"):
            token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
            if token is None or REFUSED_TOKENS.holds(token_hash(token)):
                # the 401 its worker would give, before a byte of the body is read or held
                refusal = _closing(environ, HttpError(401, MISSING_TOKEN if token is None else UNKNOWN_TOKEN))
                return _answer(request, provider.url, refusal)(environ, start_response)
        refusal, held = _read_body(environ, expected, self.budget)
        try:
            if refusal is not None:
                return _answer(request, provider.url, _closing(environ, refusal))(environ, start_response)
            return provider.handle_request(request)(environ, start_response)
        finally:
            self.budget.give_back(held)

    budget = _Budget(BUFFERED_AT_ONCE)


def _expected_body(environ) -> int:
    """How many bytes of body to read before a worker takes the request: 0 when there is
    none, or when its length alone refuses it (the handler answers 413 without reading)."""
    if environ.get("REQUEST_METHOD") not in _BODY_METHODS:
        return 0
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return MAX_BODY + 1  # no length said: read up to the limit (and one byte to tell)
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0
    return length if 0 < length <= MAX_BODY else 0


def _read_body(environ, expected: int, budget: _Budget) -> tuple[HttpError | None, int]:
    """Read the body into memory, in this connection's green thread, a slice at a time:
    (None, bytes held) when it is all here (the request then reads it from memory; the
    caller gives the bytes back once it is answered), else (the refusal to answer with, 0),
    after which the connection is closed (``_closing``).

    Each slice is held from the budget as it is read, and must be here by the time the
    bytes so far earn (``BODY_GRACE_SECONDS`` and a second per ``MIN_BYTES_PER_SECOND``):
    taken whole by the declared length, with one deadline for all of it, twenty connections
    declaring 5 MB and sending a byte a minute held the whole budget for 43 minutes, and
    every upload was a 503."""
    began = time.monotonic()
    chunked = expected > MAX_BODY
    parts: list[bytes] = []
    got = held = 0
    done = False
    try:
        while got < expected:
            n = min(_SLICE, expected - got)
            if not budget.take(n):
                return HttpError(503, "too many uploads are under way at once: send again shortly"), 0
            held += n
            seconds = began + BODY_GRACE_SECONDS + (got + n) / MIN_BYTES_PER_SECOND - time.monotonic()
            with eventlet.Timeout(max(seconds, 0.001)):
                part = environ["wsgi.input"].read(n)
            budget.give_back(n - len(part))
            held -= n - len(part)
            parts.append(part)
            got += len(part)
            if len(part) < n:  # the end: of the chunks, or the client closed early
                break
        if not chunked and got < expected:
            # what came is not the return meant (a CSV cut after "250" of "25000" was stored as 250)
            return HttpError(400, f"the request body ended after {got:,} of the {expected:,} bytes "
                                  "its Content-Length says: send it again"), 0
        environ["wsgi.input"] = io.BytesIO(b"".join(parts))
        environ["CONTENT_LENGTH"] = str(got)
        done = True
        return None, held
    except (eventlet.Timeout, OSError) as exc:  # too slow, or silent for IDLE_SECONDS
        log.info("request body of %s %s not received: %s", environ.get("REQUEST_METHOD"),
                 environ.get("PATH_INFO"), type(exc).__name__)
        return HttpError(408, f"the request body did not arrive in time (at least {MIN_BYTES_PER_SECOND:,} "
                              f"bytes a second after the first {BODY_GRACE_SECONDS} s; {got:,} of "
                              f"{expected:,} came): send it again"), 0
    except ValueError as exc:  # eventlet's ChunkReadError: a chunk size that is no number, ...
        return HttpError(400, f"the request body's chunked encoding is broken: {exc}"), 0
    finally:
        if not done:
            budget.give_back(held)


def _closing(environ, refusal: HttpError) -> HttpError:
    """``refusal``, saying ``Connection: close``, and no further request read on this
    connection: what is left of this one's body is unknown (eventlet, ignoring the answer's
    ``Connection: close``, read on to the declared length, took the next request's bytes
    for the rest of this one's and misread the rest)."""
    try:
        environ["eventlet.input"].get_socket().shutdown(socket.SHUT_RD)
    except (KeyError, AttributeError, OSError):
        pass
    refusal.headers = {**(refusal.headers or {}), "Connection": "close"}
    return refusal


def _nul_in(environ) -> str | None:
    """Which part of the request holds a NUL character, if one does."""
    if "\x00" in environ.get("PATH_INFO", ""):
        return "path"
    if "%00" in environ.get("QUERY_STRING", "") or "\x00" in environ.get("QUERY_STRING", ""):
        return "query"
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str) and "\x00" in value:
            return f"{key[5:].replace('_', '-').title()} header"
    return None


class JsonWebServer(WebServer):
    def get_wsgi_app(self):
        return _JsonErrorsApp(self)

    def get_wsgi_server(self, sock, wsgi_app, *args, **kwargs):
        server = super().get_wsgi_server(sock, wsgi_app, *args, **kwargs)
        server.socket_timeout = IDLE_SECONDS  # (nameko's accept loop sets it on each connection)
        return server

    def make_url_map(self):
        # no merging of '//' by redirect: werkzeug answered /api//history with a 308 that,
        # turned into JSON here, had no Location. A path that names no route is a 404
        url_map = super().make_url_map()
        url_map.merge_slashes = False
        return url_map


class Route(HttpRequestHandler):
    """``@route(method, url)``: like nameko's ``@http``, answering errors as JSON."""

    server = JsonWebServer()

    def handle_request(self, request):
        started = time.perf_counter()
        response = super().handle_request(request)
        method = request.method if request.method != "HEAD" else "GET"
        metrics.http_requests_total.labels(method=method, route=self.url, status=str(response.status_code)).inc()
        metrics.http_request_seconds.labels(method=method, route=self.url).observe(time.perf_counter() - started)
        if response.status_code in (401, 403):
            _audit_refusal(request, response)
        return response

    def response_from_exception(self, exc):
        if isinstance(exc, HttpError):
            return exc.response()
        log.error("unexpected error on %s %s: %r", self.method, self.url, exc)
        return json_response({"status": "ERROR", "httpStatusCode": 500,
                              "message": f"internal error: {type(exc).__name__}"}, 500)


def _answer(request, url: str, error: HttpError) -> Response:
    """An answer the edge gives itself, before any route's worker (a body that did not come,
    too many uploads, no token): counted and audited as a route's own answers are; they
    were in no metric, and StatnetHttpErrors could not see uploads refused."""
    response = error.response()
    method = request.method if request.method != "HEAD" else "GET"
    metrics.http_requests_total.labels(method=method, route=url, status=str(response.status_code)).inc()
    if response.status_code in (401, 403):
        _audit_refusal(request, response)
    return response


def _audit_refusal(request, response) -> None:
    """Who tried what outside their role or scope, whichever service refused it (a district
    user reading another district's data left no trace but a 403 counted in the metrics),
    and from where a token was refused."""
    who = getattr(request, "statnet_principal", None)
    try:
        message = json.loads(response.get_data(as_text=True)).get("message")
    except ValueError:
        message = None
    log.warning("access refused (%d) to %s from %s on %s %s: %s", response.status_code,
                f"{who.username} ({who.role} at {who.org_unit or 'the whole hierarchy'})" if who else "?",
                request.remote_addr, request.method, request.full_path.rstrip("?"), message)


route = Route.decorator
