"""Gateway service: every HTTP route of the contract under one base URL.

Routes read like the contract: authenticate, call the owning service by RPC,
relay its reply. The gateway has no tables and no domain logic; services
decide, the gateway translates.
"""
from __future__ import annotations

import codecs
import io
import json
import logging
import re
import zipfile
import zlib

import eventlet
from kombu import Queue
from nameko.exceptions import UnknownService
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from werkzeug.datastructures import MIMEAccept
from werkzeug.wrappers import Response

from services.gateway.auth import Authenticator
from services.gateway.http import ROUTING_ERROR, UNMATCHED, HttpError, json_response, route, routing_error
from shared import collectors, health, local, topology
from shared.api import MAX_BODY, DuplicateField, json_object, json_whole_number, unstorable_fields
from shared.auth import Forbidden
from shared.local import RpcProxy
from shared.config import Settings
from shared.events import subscribe

log = logging.getLogger(__name__)

REPLICA_SERVICES = ("submission", "validation", "aggregation", "notify")


BROKER_UP = ("statnet_broker_up", "1 if the gateway's last scrape read RabbitMQ's queues, else 0", [])


def queue_families(container):
    """Messages ready and consumers of every queue of the topology (the gateway's process
    only: one reader per deployment is enough, and the broker is the source of truth)."""
    from services.runner import service_classes

    settings = Settings.of(container)
    names = [e.name for e in topology.entities(service_classes().values(), settings) if isinstance(e, Queue)]
    try:
        depths = topology.queue_depths(settings, names)
    except Exception as exc:  # noqa: BLE001 - refused, reset, timed out: the broker is not there
        # an outage is a series that says 0: the queue series vanished, and with them every
        # rule on them, while /metrics still answered (StatnetBrokerUnreachable)
        collectors.count_failure(("queue_families", container.service_name), exc)
        yield collectors.gauge(*BROKER_UP, [(0,)])
        return
    yield collectors.gauge(*BROKER_UP, [(1,)])
    yield collectors.gauge("statnet_queue_messages", "Messages ready in a RabbitMQ queue", ["queue"],
                           [(q, n) for q, (n, _) in sorted(depths.items())])
    yield collectors.gauge("statnet_queue_consumers", "Consumers of a RabbitMQ queue", ["queue"],
                           [(q, c) for q, (_, c) in sorted(depths.items())])


# Unicode, the ISO 8859 and Windows code pages, and Thai's (Lao has no other): by Python's names
_CHARSET = re.compile(r"utf-(8|16|32)(-[lb]e)?|ascii|iso8859-\d+|cp125\d|cp874|tis-620|latin-1")
# IANA's names that Python's codecs don't know (Windows' Thai code page, as Windows names it)
_CHARSET_ALIASES = {"windows-874": "cp874"}
_XML_ENCODING = re.compile(rb"""(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# how each file begins (no text does); a zip of no file begins with its directory's end
_GZIP, _ZIP = b"\x1f\x8b", (b"PK\x03\x04", b"PK\x05\x06")


def _decompressed(raw: bytes, coding: str) -> bytes:
    """The body as sent before its Content-Encoding: gzip (a district on a slow line may
    compress), read no further than the size limit, so a small bomb can't become gigabytes.
    Without one, a gzip or zip file posted as it is (a DHIS2 export's .json.gz or .csv.zip)
    is told by its first bytes and opened, as DHIS2 does: it was refused as text that is
    not UTF-8, which sent the user looking at character sets."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        if raw.startswith(_ZIP):
            return _unzipped(raw)
        return _gunzipped(raw) if raw.startswith(_GZIP) else raw
    if coding not in ("gzip", "x-gzip"):
        raise HttpError(415, f"Content-Encoding {coding!r} is not supported: send the body as it is, or gzip")
    return _gunzipped(raw)


def _unzipped(raw: bytes) -> bytes:
    """The one file of a zip archive, read no further than the size limit."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            files = [i for i in archive.infolist() if not i.is_dir()]
            if len(files) != 1:
                raise _bad_body(f"the zip file holds {len(files)} files: send one file in it, or the file alone")
            with archive.open(files[0]) as member:
                out = member.read(MAX_BODY + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, EOFError,
            zlib.error) as exc:  # (RuntimeError: encrypted; NotImplementedError: a method zipfile lacks)
        raise _bad_body(f"body is not a zip file statnet can open: {exc}") from None
    if len(out) > MAX_BODY:
        raise _too_large_decompressed()
    return out


def _too_large_decompressed() -> HttpError:
    return HttpError(413, f"body is larger than {MAX_BODY // (1024 * 1024)} MB once decompressed")


def _gunzipped(raw: bytes) -> bytes:
    out, rest = b"", raw
    try:
        while rest:  # members one after another (gzip allows several), each read to its end
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += inflate.decompress(rest, MAX_BODY + 1 - len(out))
            if len(out) > MAX_BODY:
                raise _too_large_decompressed()
            if not inflate.eof:  # cut off: what came is no whole body, and none of it is stored
                raise _bad_body("the gzip body ends before its data does (cut off in transfer?)")
            rest = inflate.unused_data
    except zlib.error as exc:
        raise _bad_body(f"body is not gzip data: {exc}") from None
    return out


# the first four bytes of an XML document in UTF-16 without a byte-order mark: "<?"
_UTF16_XML_START = {b"<\x00?\x00": "UTF-16-LE", b"\x00<\x00?": "UTF-16-BE"}


# What a path without a suffix answers by the Accept header, as DHIS2 chooses (a CSV reader
# asking for text/csv was handed JSON with a 200): the media types offered, the first the
# default, each with its format's name for the owning service (none: JSON)
_DATA_VALUE_FORMATS = {"application/json": None, "text/csv": "csv", "application/csv": "csv"}
_ANALYTICS_FORMATS = {**_DATA_VALUE_FORMATS, "application/vnd.sdmx.data+csv": "sdmx"}


def _wanted(request, offered: dict[str, str | None]) -> tuple[str, ...]:
    """The format argument for the service (none for JSON), or a 406 when the Accept header
    asks only for formats not offered (ADX, XML). A type's parameters do not keep it from
    matching (werkzeug's match took application/json;charset=utf-8 for another type), and
    a header naming nothing offered nor any XML (text/html alone) gets JSON, as before."""
    if not request.headers.get("Accept", "").strip():
        return ()
    accepted = MIMEAccept([(value.split(";")[0].strip().lower(), quality)
                           for value, quality in request.accept_mimetypes])
    best = accepted.best_match(list(offered))
    if best is None:
        if any("xml" in value for value, quality in accepted if quality > 0):
            raise HttpError(406, f"none of the media types accepted ({request.headers['Accept']}) is offered "
                                 f"here: ask for {', '.join(offered)}, or use the path's .json or .csv form")
        return ()
    return () if offered[best] is None else (offered[best],)


def one_each(args) -> dict[str, str]:
    """The query's parameters, each given once: a route whose parameters take one value
    each refuses a second (``ou=0301&ou=03`` read the first and dropped the other, where
    analytics answers both); the same value twice is one."""
    repeated = {name: values for name, values in args.to_dict(flat=False).items() if len(set(values)) > 1}
    if repeated:
        raise HttpError(400, "; ".join(f"{name} is given {len(values)} times ({', '.join(map(repr, values))}): "
                                       "this route takes it once" for name, values in repeated.items()))
    return args.to_dict()


def _bad_body(message: str, value: str | None = None) -> HttpError:
    """A 400 about the body as a whole, its one conflict naming it."""
    return HttpError(400, message, conflicts=[{"object": "body", "value": value, "message": message}])


_LINE_END = re.compile(r"\r\n|\r|\n")


def _line_of(text: str, at: int) -> tuple[int, str]:
    """(number, text) of the line holding ``text[at]``, counted as a CSV reader counts them
    (lines ended by LF, CRLF or CR alone, mixed in one file too)."""
    head = text[:at]
    start = max(head.rfind("\n"), head.rfind("\r")) + 1
    end = _LINE_END.search(text, at)
    return len(_LINE_END.findall(head)) + 1, text[start:end.start() if end else len(text)]


class GatewayService:
    name = "gateway"

    auth = Authenticator()
    queues = collectors.Source(queue_families)
    registry = RpcProxy("registry")
    submission = RpcProxy("submission")
    validation = RpcProxy("validation")
    aggregation = RpcProxy("aggregation")
    notify = RpcProxy("notify")

    # ------------------------------------------------------------ plumbing

    @property
    def settings(self) -> Settings:
        return self.auth.provider.settings

    def call(self, service: str, method: str, *args, **kwargs):
        """An RPC with the gateway's timeout: 503 when the service is down or too slow."""
        try:
            return local.ask(getattr(self, service), service, method, *args, **kwargs)
        except local.Unavailable as exc:
            raise HttpError(503, str(exc)) from None

    def principal(self, request, action: str | None = None):
        """The caller; with ``action``, 403 unless the caller's role may do it. A route that
        takes a body checks the role before reading it: a reporter posting metadata learns
        that it may not, not what is wrong with the document (or that it is too large)."""
        principal = self.auth.principal(request, lambda h: self.call("registry", "authenticate", h))
        request.statnet_principal = principal  # who a refusal is logged against (http.Route)
        if action is not None:
            try:
                principal.require(action)  # the owning service checks it again, with scope
            except Forbidden as exc:
                raise HttpError(403, str(exc)) from None
        return principal

    def relay(self, reply: dict) -> Response:
        body, status = reply["body"], reply["status"]
        headers = reply.get("headers") or {}
        if status == 503 and "Retry-After" not in headers:  # a service's own 503 (a dry run's peer
            headers = {**headers, "Retry-After": "5"}      # down) says when to try, as the edge's do
        if reply.get("content_type", "application/json").startswith("application/json"):
            return json_response(body, status, headers)
        return Response(body, status=status, headers=headers, content_type=reply["content_type"])

    def api(self, request, service: str, method: str, *args) -> Response:
        """Authenticate, then relay ``service.method(principal, *args)``."""
        principal = self.principal(request)
        return self.relay(self.call(service, method, principal.to_dict(), *args))

    def query(self, request) -> dict[str, str]:
        """``one_each`` of the query, once the caller is known (an unknown token is a 401
        whatever its parameters are)."""
        self.principal(request)
        return one_each(request.args)

    @staticmethod
    def body_text(request) -> str:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise HttpError(413, f"body is larger than {MAX_BODY // (1024 * 1024)} MB")
        if request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            # a streamed upload (Transfer-Encoding: chunked) has no length: werkzeug gives an
            # empty stream unless the server says it ends the input, which eventlet's does
            # (it reads the chunks) without saying so. Read the server's input, bounded
            raw = request.environ["wsgi.input"].read(MAX_BODY + 1)
        else:
            raw = request.stream.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise HttpError(413, f"body is larger than {MAX_BODY // (1024 * 1024)} MB")
        raw = _decompressed(raw, request.headers.get("Content-Encoding", ""))
        # the charset the client declares (a spreadsheet's CSV in windows-1252, an ADX file in
        # UTF-16), else UTF-8; what it declares is what the body is read as
        charset = request.mimetype_params.get("charset")
        by_document = False  # the charset is the XML declaration's, not the Content-Type's
        if charset is None:  # undeclared: UTF-8, or UTF-16 when its byte-order mark says so
            xml = (request.mimetype or "").endswith("xml")
            charset = "UTF-16" if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "UTF-8"
            if xml and raw[:4] in _UTF16_XML_START:
                # UTF-16 without a byte-order mark, told by "<?" itself (XML 1.0 appendix F):
                # a document declared UTF-16LE or UTF-16BE has no mark, rightly
                charset = _UTF16_XML_START[raw[:4]]
            declared = _XML_ENCODING.match(raw) if xml else None
            if declared and charset == "UTF-8" and declared.group(1).lower() not in (b"utf-8", b"utf8") \
                    and not _is_utf8(raw):
                # an XML document's own declaration, as RFC 7303 and DHIS2's XML reader take it
                # (an ADX file saved in ISO-8859-1 said so, and was refused as not UTF-8); only
                # where the bytes are not UTF-8: Lao text under a wrong declaration read as
                # mojibake when the declaration came first
                charset, by_document = declared.group(1).decode("ascii"), True
        codec = _CHARSET_ALIASES.get(charset.lower(), charset)
        try:
            # a character set of the web's (Python's codecs also name transforms such as
            # base64 or rot13, and escape decoders)
            if not _CHARSET.fullmatch(codecs.lookup(codec).name):
                raise LookupError(charset)
        except LookupError:
            if by_document:  # the media type is one we take: the document is what's wrong
                raise _bad_body(f"the document's encoding {charset!r} is not supported: "
                                f"send UTF-8 (or UTF-16, ISO-8859-1)") from None
            raise HttpError(415, f"charset {charset!r} is not supported: send UTF-8") from None
        try:
            text = raw.decode(codec)
            text.encode("utf-8")  # UTF-7 and escapes can spell half a surrogate pair: no character
        except UnicodeError as exc:
            raise _bad_body(f"body is not {charset} text: {exc}"
                            + ("" if "charset" in request.mimetype_params else
                               f" (send UTF-8, or name the charset: Content-Type: "
                               f"{request.mimetype or 'text/csv'}; charset=...)")) from None
        if not raw.isascii() and not codecs.lookup(codec).name.startswith("utf") and _is_utf8(raw):
            # UTF-8 labelled a single-byte charset (old HTTP's text/* default, ISO-8859-1, or a
            # client's setting): read as labelled, Lao was stored as mojibake without a word.
            # Text of those charsets is UTF-8 by accident only when short and odd (its accented
            # letters are followed by ASCII, not by the 0x80-0xBF bytes UTF-8 needs)
            raise _bad_body(f"body is labelled {charset} but is UTF-8 text (read as {charset}, its "
                            "letters beyond ASCII would be stored garbled): send it with charset=utf-8")
        if "\x00" in text:
            # most often UTF-16 without its byte-order mark (every other byte of Latin text is 0);
            # else one stray character, named by its line (shown with the NUL as \u0000)
            line, said = _line_of(text, text.index("\x00"))
            raise _bad_body(f"body holds a NUL character (line {line}), which no text can be stored with"
                            + ("" if "charset" in request.mimetype_params else
                               " (UTF-16 without a byte-order mark? name the charset: Content-Type: "
                               f"{request.mimetype or 'text/csv'}; charset=UTF-16LE)"),
                            said[:200].replace("\x00", "\\u0000"))
        # a byte-order mark (Windows editors write one) is no part of the document, as
        # DHIS2's readers skip it too
        return text.removeprefix("\ufeff")

    def json_body(self, request) -> dict:
        """The body as a JSON object: every document the API takes as JSON is one."""
        text = self.body_text(request)
        try:
            body = json.loads(text, parse_int=json_whole_number, object_pairs_hook=json_object)
        except DuplicateField as exc:
            raise _bad_body(f"body is ambiguous: {exc}") from None
        except ValueError as exc:
            raise HttpError(400, f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise _bad_body("body is not valid JSON: nested too deeply") from None
        if not isinstance(body, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(body), "a number")
            raise _bad_body(f"body must be a JSON object ({{...}}), not {kind}")
        bad = unstorable_fields(body, text=text)
        if bad:
            raise HttpError(400, f"{len(bad)} field(s) hold text that cannot be stored: "
                                 + "; ".join(f"{where} holds {what}" for where, what in bad[:5]),
                            conflicts=[{"object": where, "value": None, "message": f"holds {what}"}
                                       for where, what in bad])
        return body

    def await_replicas(self, version: int | None) -> None:
        """Answer a metadata change only once every service's replica has it (read-your-writes)."""
        if not version:
            return
        calls = []
        for service in REPLICA_SERVICES:
            try:
                calls.append((service, getattr(self, service).await_metadata.call_async(version)))
            except UnknownService:
                log.warning("%s is not running; it will catch up with metadata version %d when it starts",
                            service, version)
        for service, call in calls:
            try:
                with eventlet.Timeout(self.settings.rpc_timeout):
                    call.result()
            except (eventlet.Timeout, Exception) as exc:  # the import itself has succeeded
                log.warning("%s has not confirmed metadata version %d: %s", service, version, exc)

    # ------------------------------------------------------------ operations

    @route("GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS", UNMATCHED)
    def unmatched(self, request):
        """A request to no route of the API: the caller's token first (401 if unknown), then
        the router's own 404 or 405."""
        if ROUTING_ERROR in request.environ:
            self.principal(request)
        raise routing_error(request)

    @route("GET", "/health")
    def health(self, request):
        status, body = health.report(self.settings)
        return json_response(body, status)

    @route("GET", "/metrics")
    def metrics(self, request):
        return Response(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------ registry

    @route("POST", "/api/users")
    def create_user(self, request):
        principal = self.principal(request, "users.write")
        reply = self.call("registry", "create_user", principal.to_dict(), self.json_body(request))
        if reply["status"] == 201:
            self.auth.forget_user(reply["body"]["username"])
        return self.relay(reply)

    # Each gateway's cache by a queue of its own (broadcast): the shared queue reaches one
    # gateway of several, and a token rotated through another stood here for the hour if the
    # registry stopped within the cache's seconds. The shared one stays: it keeps the event
    # routable while no gateway runs (mandatory publishing: the registry's outbox stalled on
    # an unroutable event) and shows the gateways to `statnet status`, which asks the broker.
    @subscribe("registry", "user_changed", broadcast=True)
    @subscribe("registry", "user_changed")
    def forget_changed_user(self, event):
        self.auth.forget_user(event.data["username"], event.data["changed_at"])

    @route("POST", "/api/metadata")
    def import_metadata(self, request):
        principal = self.principal(request, "metadata.write")
        reply = self.call("registry", "import_metadata", principal.to_dict(), self.json_body(request))
        self.await_replicas(reply.get("metadata_version"))
        return self.relay(reply)

    @route("GET", "/api/metadata")
    def export_metadata(self, request):
        return self.api(request, "registry", "export_metadata", self.query(request))

    @route("GET", "/api/orgUnits/<code>")
    def get_org_unit(self, request, code):
        return self.api(request, "registry", "get_org_unit", code)

    @route("GET", "/api/orgUnits/<code>/coverage")
    def coverage(self, request, code):
        return self.api(request, "registry", "coverage", code)

    @route("GET", "/api/focalPoints")
    def list_focal_points(self, request):
        query = self.query(request)
        return self.api(request, "registry", "list_focal_points", query.get("orgUnit"),
                        query.get("includeRetired"))

    @route("DELETE", "/api/focalPoints/<code>")
    def retire_focal_point(self, request, code):
        principal = self.principal(request, "focal_points.write")
        reply = self.call("registry", "retire_focal_point", principal.to_dict(), code)
        self.await_replicas(reply.get("metadata_version"))
        return self.relay(reply)

    @route("PUT", "/api/focalPoints/<code>")
    def put_focal_point(self, request, code):
        principal = self.principal(request, "focal_points.write")
        reply = self.call("registry", "put_focal_point", principal.to_dict(), code, self.json_body(request))
        self.await_replicas(reply.get("metadata_version"))
        return self.relay(reply)

    # ------------------------------------------------------------ returns

    @route("POST", "/api/dataValueSets")
    def post_data_value_set(self, request):
        principal = self.principal(request, "returns.submit")
        body = self.body_text(request)
        return self.relay(self.call("submission", "receive", principal.to_dict(),
                                    request.headers.get("Content-Type", ""), body,
                                    request.headers.get("Idempotency-Key") or None,
                                    one_each(request.args)))

    @route("GET", "/api/dataValueSets")
    def get_data_value_set(self, request):
        # DHIS2 repeats a parameter for each item (dataSet=A&dataSet=B): every one is passed
        return self.api(request, "aggregation", "data_values", request.args.to_dict(flat=False),
                        *_wanted(request, _DATA_VALUE_FORMATS))

    @route("GET", "/api/dataValueSets.json")
    def get_data_value_set_json(self, request):
        return self.api(request, "aggregation", "data_values", request.args.to_dict(flat=False))

    @route("GET", "/api/dataValueSets.csv")
    def get_data_value_set_csv(self, request):
        return self.api(request, "aggregation", "data_values", request.args.to_dict(flat=False), "csv")

    @route("POST", "/api/history")
    def load_history(self, request):
        principal = self.principal(request, "history.load")
        return self.relay(self.call("aggregation", "load_history", principal.to_dict(), one_each(request.args),
                                    self.body_text(request)))

    @route("POST", "/api/history/begin")
    def begin_history(self, request):
        return self.api(request, "aggregation", "begin_history")

    @route("GET", "/api/history")
    def history_status(self, request):
        return self.api(request, "aggregation", "history_status")

    @route("POST", "/api/history/done")
    def history_done(self, request):
        return self.api(request, "aggregation", "history_done")

    @route("GET", "/api/submissions/<return_id>")
    def get_submission(self, request, return_id):
        return self.api(request, "submission", "get", return_id)

    # ------------------------------------------------------------ aggregates

    @route("GET", "/api/validationResults")
    def validation_results(self, request):
        return self.api(request, "validation", "results", self.query(request))

    # every value of a repeated parameter is passed: DHIS2 clients send dimension= per dimension
    @route("GET", "/api/analytics")
    def analytics(self, request):
        return self.api(request, "aggregation", "analytics", request.args.to_dict(flat=False),
                        *_wanted(request, _ANALYTICS_FORMATS))

    @route("GET", "/api/analytics.json")
    def analytics_json(self, request):
        return self.api(request, "aggregation", "analytics", request.args.to_dict(flat=False))

    @route("GET", "/api/analytics.csv")
    def analytics_csv(self, request):
        return self.api(request, "aggregation", "analytics", request.args.to_dict(flat=False), "csv")

    @route("GET", "/api/analytics.sdmx.csv")
    def analytics_sdmx(self, request):
        return self.api(request, "aggregation", "analytics", request.args.to_dict(flat=False), "sdmx")

    @route("GET", "/api/completeness")
    def completeness(self, request):
        return self.api(request, "aggregation", "completeness", self.query(request))

    # ------------------------------------------------------------ alerts

    @route("POST", "/api/deadlines/check")
    def check_deadlines(self, request):
        return self.api(request, "notify", "check_deadlines", (query := self.query(request)).get("asOf"), query)

    @route("GET", "/api/notifications")
    def notifications(self, request):
        return self.api(request, "notify", "list_notifications", self.query(request))

    @route("POST", "/api/notifications/retry")
    def retry_notifications(self, request):
        return self.api(request, "notify", "retry_notifications", self.query(request))
