"""The gateway's HTTP entrypoint: JSON errors, request metrics, no HTML pages."""
from __future__ import annotations

import json
import logging
import time

from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from shared import metrics, serialization

log = logging.getLogger(__name__)


class HttpError(Exception):
    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"status": "ERROR", "httpStatusCode": status, "message": message, **extra}
        # a 401 says how to authenticate (RFC 9110), as DHIS2's does; a 503 when to try again
        self.headers = ({"WWW-Authenticate": 'Bearer realm="statnet"'} if status == 401
                        else {"Retry-After": "5"} if status == 503 else None)


MISSING_TOKEN = "missing bearer token: send 'Authorization: Bearer <token>'"


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
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
        except HTTPException as exc:
            if environ.get("PATH_INFO", "").startswith("/api/") and \
                    bearer_token(environ.get("HTTP_AUTHORIZATION", "")) is None:
                # every /api/ call without a token is a 401, one to no route too: what the
                # API holds is not told to a caller who has not said who they are
                error = HttpError(401, MISSING_TOKEN)
                return json_response(error.body, 401, error.headers)(environ, start_response)
            response = json_response({"status": "ERROR", "httpStatusCode": exc.code,
                                      "message": f"{exc.name}: {environ.get('REQUEST_METHOD')} "
                                                 f"{environ.get('PATH_INFO')}"}, exc.code)
            if exc.code == 405 and getattr(exc, "valid_methods", None):
                response.headers["Allow"] = ", ".join(exc.valid_methods)
            return response(environ, start_response)
        request.path_values = values
        return provider.handle_request(request)(environ, start_response)


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
        return response

    def response_from_exception(self, exc):
        if isinstance(exc, HttpError):
            return json_response(exc.body, exc.status, exc.headers)
        log.error("unexpected error on %s %s: %r", self.method, self.url, exc)
        return json_response({"status": "ERROR", "httpStatusCode": 500,
                              "message": f"internal error: {type(exc).__name__}"}, 500)


route = Route.decorator
