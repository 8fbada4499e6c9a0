"""Submission service.

Event flow::

    POST /api/dataValueSets -> receive -> [return + outbox, one transaction] -> submission.return_received
    validation.return_validated | validation.return_rejected -> status VALIDATED | REJECTED
    aggregation.return_aggregated                            -> status AGGREGATED (+ importCount)

A return is acknowledged (202) only after it and its event are committed
together: if the process dies right after answering, the outbox relay of
the next process publishes the event.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import uuid

import sqlalchemy as sa
from nameko.rpc import rpc

from services.submission import formats, intake
from services.submission import tables as t
from shared import local, metrics, serialization
from shared.api import MAX_BODY, ApiError, api_rpc, error, flag, not_found, reply
from shared.delivery import Database
from shared.events import subscribe
from shared.local import RpcProxy
from shared.logs import set_correlation
from shared.periods import LOCAL_TZ, Period, local_date, on_time, show
from shared.replica import KeepsMetadataReplica, Replica
from shared.returns import reported_places
from shared.schemas.api import violations_out

log = logging.getLogger(__name__)

MAX_TEXT_GROWTH = 3  # UTF-8 bytes per byte sent, at most (a one-byte code page's Thai letter)
STATUS_RANK = {"RECEIVED": 0, "VALIDATED": 1, "REJECTED": 1, "AGGREGATED": 2}
NO_IMPORT = {"imported": 0, "updated": 0, "ignored": 0, "deleted": 0}
MAX_KEY = 200  # characters of an Idempotency-Key (a UUID is 36)


def _refused(obj: str, value, message: str) -> ApiError:
    """A 400 about one part of the request, in a return's refusal shape (CONTRACT 4)."""
    return error(400, message, conflicts=[formats.conflict(obj, value, message)])


def _place_in_scope(principal, md, org_unit, period) -> bool:
    """Is (unit, period) the principal's: in its subtree for that period, as analytics and
    validationResults count it (not where the unit is today: a village's new district read
    the returns its old one had sent before the move)?"""
    return org_unit in md.org_units and md.place_in(org_unit, period, principal.org_unit)
STATUS_BATCH = 50  # status events per transaction, at most (shared.events: group commit)

R = t.submission_return


# what a status event sets besides the status, and the column's SQL type
_STATUS_COLUMNS = {"violations": "jsonb", "validated_at": "timestamptz", "import_count": "jsonb",
                   "aggregated_at": "timestamptz"}


@functools.lru_cache(maxsize=None)
def _advance_statements(columns: tuple[str, ...]) -> tuple[sa.TextClause, sa.TextClause]:
    """(forward, behind) for a batch of status events setting ``columns``: forward moves
    the status of the returns it can (never backward) and returns their ids; behind sets
    the columns on the rest, which a later status reached first, where not set yet (its
    time column still empty), and returns their ids: each id either returns is a return
    reaching this status for the first time."""
    record = ", ".join(f"{c} {_STATUS_COLUMNS[c]}" for c in columns)
    sets = ", ".join(f"{c} = x.{c}" for c in columns)
    (stamp,) = (c for c in columns if c.endswith("_at"))
    source = f"json_to_recordset(CAST(:rows AS json)) AS x(id text, {record})"
    forward = sa.text(f"UPDATE {R.fullname} r SET status = :status, status_rank = :rank, {sets} "
                      f"FROM {source} WHERE r.id = x.id AND r.status_rank < :rank RETURNING r.id, r.value_count")
    behind = sa.text(f"UPDATE {R.fullname} r SET {sets} FROM {source} "
                     f"WHERE r.id = x.id AND r.id <> ALL(CAST(:moved AS text[])) AND r.{stamp} IS NULL "
                     f"RETURNING r.id")
    return forward, behind


_INTAKE_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))")

# what was received before, in one round trip: the first return sent with this
# Idempotency-Key, the user's latest return for the same data set, unit and period (a
# byte-identical body answers its receipt), and for an intake (``seq``) the sequence number
# a new one gets (taken now so that the return and its event, which carries it, are one
# statement)
def _earlier(seq: str) -> sa.TextClause:
    return sa.text(f"""
    SELECT (SELECT r.id FROM {R.fullname} r
            WHERE r.submitted_by = :user AND r.idempotency_key = :key) AS by_key,
           latest.id AS latest_id, latest.body_sha256 AS latest_sha256{seq}
    FROM (SELECT 1) AS one LEFT JOIN LATERAL (
        SELECT r.id, r.body_sha256 FROM {R.fullname} r
        WHERE r.submitted_by = :user AND r.data_set = :ds AND r.org_unit = :ou AND r.period = :pe
        ORDER BY r.seq DESC LIMIT 1) AS latest ON true""")


_EARLIER_RECEIPT = _earlier(f", nextval(pg_get_serial_sequence('{R.fullname}', 'seq')) AS seq")
# a dry run's question: would this request be answered by an earlier receipt (no number taken)
_EARLIER_SEEN = _earlier("")
_BY_KEY = sa.text(f"SELECT id FROM {R.fullname} WHERE submitted_by = :user AND idempotency_key = :key")


def _answered_before(earlier, digest: str) -> str | None:
    """The earlier receipt a request is answered with: the one its Idempotency-Key names,
    else the user's latest return for the place if its body is byte-identical."""
    return earlier.by_key or (earlier.latest_id if earlier.latest_sha256 == digest else None)


# an Idempotency-Key sent with a body identical to the user's latest return: kept on that
# return, when it has none (a return keeps the first key it was sent with)
_KEY_EARLIER = sa.text(f"""
    UPDATE {R.fullname} SET idempotency_key = :key
    WHERE id = :id AND idempotency_key IS NULL
      AND NOT EXISTS (SELECT 1 FROM {R.fullname} WHERE submitted_by = :user AND idempotency_key = :key)""")

_STORE_RETURN = f"""
    INSERT INTO {R.fullname} (id, seq, data_set, org_unit, period, submitted_by, received_at, on_time,
                              status, status_rank, content_type, body_sha256, idempotency_key, body,
                              data_values, value_count, place_org_units, place_periods)
    VALUES (:id, :seq, :ds, :ou, :pe, :user, :received_at, :on_time, 'RECEIVED', 0, :content_type,
            :sha256, :key, :body, CAST(:values AS json), :n, :place_ous, :place_pes)"""


# A return of its header's place alone by that place (return_place, migration 0004; a
# place's returns are few); one of several places by each of them (return_of_places, 0007:
# a district's returns of its villages, few beside the villages' own)
_IN_TIME = "r.status <> 'REJECTED' AND CAST(r.received_at AT TIME ZONE CAST(:tz AS text) AS date) <= k.last_day"
_RECEIVED_IN_TIME = sa.text(f"""
WITH k AS (
    SELECT * FROM unnest(CAST(:ds AS text[]), CAST(:ou AS text[]), CAST(:pe AS text[]), CAST(:last AS date[]))
                  WITH ORDINALITY AS k(ds, ou, pe, last_day, n))
SELECT CAST(k.n AS int) - 1
FROM k JOIN {R.fullname} r ON r.data_set = k.ds AND r.org_unit = k.ou AND r.period = k.pe
WHERE r.place_org_units IS NULL AND {_IN_TIME}
UNION
SELECT CAST(k.n AS int) - 1
FROM {R.fullname} r CROSS JOIN LATERAL unnest(r.place_org_units, r.place_periods) AS p(ou, pe)
JOIN k ON k.ds = r.data_set AND k.ou = p.ou AND k.pe = p.pe
WHERE r.place_org_units IS NOT NULL AND r.data_set = ANY(CAST(:ds AS text[])) AND {_IN_TIME}
""")


# returns on their way: received, not yet aggregated or rejected (by return_status; few)
_IN_FLIGHT = f"r.status_rank < {STATUS_RANK['AGGREGATED']} AND r.status <> 'REJECTED'"
_COMBOS_IN_FLIGHT = sa.text(f"""
SELECT DISTINCT v ->> 'data_element', v ->> 'category_option_combo'
FROM {R.fullname} r CROSS JOIN LATERAL json_array_elements(r.data_values) AS v
WHERE {_IN_FLIGHT} AND v ->> 'data_element' = ANY(CAST(:elements AS text[]))
""")
_DATA_SETS_IN_FLIGHT = sa.text(f"""
SELECT DISTINCT r.data_set FROM {R.fullname} r WHERE {_IN_FLIGHT} AND r.data_set = ANY(CAST(:asked AS text[]))
""")


def _places_of(checked) -> dict:
    """The places the return reports for, side by side (``reported_places``), or NULL for
    the header's alone: notify's deadline check asks by each of them."""
    places = reported_places({"values": checked.values, "org_unit": checked.org_unit,
                              "period": checked.period.code})
    if places == [(checked.org_unit, checked.period.code)]:
        return {"place_ous": None, "place_pes": None}
    return {"place_ous": [ou for ou, _ in places], "place_pes": [pe for _, pe in places]}


def _receipt(return_id: str) -> dict:
    return reply({"id": return_id, "status": "RECEIVED"}, 202)


class SubmissionService(KeepsMetadataReplica):
    name = "submission"

    db = Database(t.metadata)
    replica = Replica(t.replica)
    validation_rpc = RpcProxy("validation")
    aggregation_rpc = RpcProxy("aggregation")  # a dry run's importCount: aggregation holds the values

    # ---------------------------------------------------------------- intake

    @api_rpc
    def receive(self, principal, content_type: str, body: str, idempotency_key: str | None = None,
                params: dict | None = None):
        principal.require("returns.submit")
        params = params or {}
        try:
            dry_run = flag(params, "dryRun")  # read first: a mistyped one must store nothing
        except ApiError as exc:  # told as every refusal of a return is, by its conflicts
            raise _refused("dryRun", params.get("dryRun"), exc.body["message"]) from None
        # a dry run asked for under another spelling (dryrun=true) was ignored, as any unknown
        # parameter is, and the return stored for real
        for name in params:
            if name != "dryRun" and name.replace("_", "").replace("-", "").lower() == "dryrun":
                raise _refused(name, params[name], f"{name}: did you mean dryRun? (parameter names are "
                                                   "case-sensitive; nothing was stored)")
        if idempotency_key is not None and len(idempotency_key) > MAX_KEY:
            # (a longer one overflowed its index row: a 503 that retrying could never cure)
            raise _refused("Idempotency-Key", idempotency_key,
                           f"Idempotency-Key of {len(idempotency_key)} characters is longer than {MAX_KEY}")
        try:
            raw, checked, received_at = self._read(principal, content_type, body, params)
        except ApiError:
            # the same key from the same user is the same request, whatever its body is now
            # (CONTRACT 4): a retry whose body broke on the way, or another's, was a 400 where
            # the first receipt is the answer. Asked only of a refused body: an accepted one
            # meets its key under the intake lock below (one round trip more on every keyed
            # return is what the intake's three statements were cut down from)
            first = self._keyed_before(principal, idempotency_key)
            if first is None:
                raise
            return reply({**self._status_of(principal, first), "dryRun": True}) if dry_run else _receipt(first)

        # the same body with importStrategy=DELETE is another return: it undoes the first
        strategy = "\x00importStrategy=DELETE" if raw.delete else ""
        digest = hashlib.sha256((body + strategy).encode("utf-8")).hexdigest()
        here = {"user": principal.username, "ds": checked.data_set.code, "ou": checked.org_unit,
                "pe": checked.period.code}
        if dry_run:
            # sent for real, a request an earlier receipt answers gets that receipt's id: its
            # final status is that return's, not a new return's (which would count the
            # values again as updated)
            with self.db.connect() as conn:
                earlier = _answered_before(conn.execute(_EARLIER_SEEN, {**here, "key": idempotency_key}).one(),
                                           digest)
            if earlier is not None:
                return reply({**self._status_of(principal, earlier), "dryRun": True})
            return reply(self._dry_run(checked, principal, received_at))
        with self.db.transaction() as tx:
            # one intake at a time per user and (data set, unit, period): two identical
            # bodies sent together are stored once. Its own statement: one that waited for
            # the lock inside would read with the snapshot taken before it was granted. With
            # an Idempotency-Key, first one at a time per user and key, whatever the bodies
            # (sent together for several periods, they raced to the key's unique index: 500s);
            # always in this order, so two requests never wait for each other's second lock
            if idempotency_key is not None:
                tx.execute(_INTAKE_LOCK, {"k": f"key|{principal.username}|{idempotency_key}"})
            tx.execute(_INTAKE_LOCK, {"k": "|".join(here.values())})
            # received now, under the place's lock: two returns for one place get their receipt
            # times in the order of their seq (which says which one replaces the other), not in
            # the order their requests arrived before one waited for the other's lock
            received_at = dt.datetime.now(dt.timezone.utc)
            in_time = on_time(checked.period, received_at, checked.data_set.timely_days)
            earlier = tx.execute(_EARLIER_RECEIPT, {**here, "key": idempotency_key}).one()
            answered = _answered_before(earlier, digest)
            if answered is not None:
                if not earlier.by_key and idempotency_key is not None:
                    # the key now names that receipt too: a later request with it (and another
                    # body) is the same request again, not a new return
                    tx.execute(_KEY_EARLIER, {"id": answered, "user": principal.username,
                                              "key": idempotency_key})
                return _receipt(answered)
            return_id = str(uuid.uuid4())
            set_correlation(return_id, self.name)  # from here on, this worker's log lines name the return
            stored = {**here, "id": return_id, "seq": earlier.seq, "received_at": received_at,
                      "on_time": in_time, "content_type": formats.media_type(content_type),
                      "sha256": digest, "key": idempotency_key, "body": body,
                      "values": serialization.dumps(checked.values), "n": len(checked.values),
                      **_places_of(checked)}
            # the return and its event in one statement: one round trip fewer per return
            tx.emit("return_received", {
                "return_id": return_id, "seq": earlier.seq, "data_set": checked.data_set.code,
                "org_unit": checked.org_unit, "period": checked.period.code,
                "received_at": received_at, "on_time": in_time,
                "submitted_by": principal.username, "values": checked.values,
            }, correlation_id=return_id, along=(_STORE_RETURN, stored))
        metrics.submissions_total.labels(status="RECEIVED").inc()
        metrics.returns_received_total.labels(dataset=checked.data_set.code, period=checked.period.code).inc()
        log.info("return %s received: %s %s %s, %d values", return_id, checked.data_set.code,
                 checked.org_unit, checked.period.code, len(checked.values))
        return _receipt(return_id)

    def _dry_run(self, checked, principal, received_at) -> dict:
        """What the return's final status would say, storing nothing (validation by RPC)."""
        try:
            # within the gateway's own call: a shorter wait, so that the 503 names validation
            outcome = local.ask(self.validation_rpc, "validation", "check_return", {
                "data_set": checked.data_set.code, "org_unit": checked.org_unit,
                "period": checked.period.code, "values": checked.values}, share=0.4)
            # a rejected return stores nothing; an accepted one is counted by what aggregation
            # holds, as its own importCount will be (validation holds no text and no history)
            import_count = {**NO_IMPORT, "ignored": len(checked.values)} if outcome["status"] == "REJECTED" \
                else local.ask(self.aggregation_rpc, "aggregation", "import_count", checked.values, share=0.4)
        except local.Unavailable as exc:
            raise error(503, f"dryRun needs validation and aggregation: {exc}") from None
        # every field of GET /api/submissions/{id}, as the return would have them at its final
        # status (CONTRACT 4): REJECTED, or AGGREGATED for one validation accepts (it said
        # VALIDATED, which no return keeps: accepted, it is aggregated)
        accepted = outcome["status"] != "REJECTED"
        now = show(dt.datetime.now(dt.timezone.utc))
        return {"id": None, "status": "AGGREGATED" if accepted else "REJECTED", "dryRun": True,
                "dataSet": checked.data_set.code, "orgUnit": checked.org_unit,
                "period": checked.period.code, "receivedAt": show(received_at),
                "onTime": checked.on_time, "submittedBy": principal.username,
                "validatedAt": now, "aggregatedAt": now if accepted else None,
                "importCount": import_count, **violations_out(outcome["violations"])}

    # ---------------------------------------------------------------- reading

    @api_rpc
    def get(self, principal, return_id: str):
        principal.require("read")
        return reply(self._status_of(principal, return_id))

    def _keyed_before(self, principal, idempotency_key: str | None) -> str | None:
        """The return the user's ``idempotency_key`` already names, if any."""
        if idempotency_key is None:
            return None
        with self.db.connect() as conn:
            return conn.execute(_BY_KEY, {"user": principal.username, "key": idempotency_key}).scalar()

    def _read(self, principal, content_type: str, body: str, params: dict):
        """(the return parsed, it checked against the metadata, when it was received); raises
        ``ApiError`` with the refusal to give."""
        # the gateway holds the body as sent to 5 MB; this bounds the text decoded from it, which
        # UTF-8 makes larger (a Lao character is two bytes in UTF-16, three here: a 3.4 MB
        # UTF-16 file was refused as over 5 MB)
        if len(body.encode("utf-8")) > MAX_TEXT_GROWTH * MAX_BODY:
            raise error(413, f"body is larger than {MAX_BODY // (1024 * 1024)} MB")
        try:
            raw = formats.parse(content_type, body, params)
        except formats.UnsupportedMediaType as exc:
            # (the HTTP server reads a request without a Content-Type as text/plain)
            unnamed = " (or none was named)" if str(exc) == "text/plain" else ""
            raise error(415, f"content type {exc}{unnamed} is not supported; name the body's format: "
                             "application/json, application/adx+xml or text/csv")
        except formats.ParseError as exc:
            raise error(400, "the body could not be read: nothing was stored", conflicts=exc.conflicts)
        received_at = dt.datetime.now(dt.timezone.utc)
        md = self.replica.current()
        while True:
            try:
                formats.infer_data_set(raw, md, local_date(received_at))
                checked = intake.check(raw, md, principal, received_at)
                break
            except (formats.ParseError, intake.Refused) as exc:
                if md.version != self.replica.version():
                    # this process's snapshot is a moment behind the replica (another instance
                    # applied a metadata change, and the gateway answered the import once one
                    # instance had it): the unit just imported is not "unknown"
                    self.replica.invalidate()
                    md = self.replica.current()
                    continue
                if isinstance(exc, intake.Refused):
                    raise ApiError(exc.status, exc.body) from None
                raise error(400, "the data set could not be determined: nothing was stored",
                            conflicts=exc.conflicts) from None
        return raw, checked, received_at

    def _status_of(self, principal, return_id: str) -> dict:
        """``GET /api/submissions/{id}``'s body, as ``principal`` may read it."""
        with self.db.connect() as conn:
            row = conn.execute(sa.select(R).where(R.c.id == return_id)).first()
        if row is None:
            raise not_found(f"submission {return_id!r}")
        # by where the return's places are, not by who sent it (a sender re-scoped elsewhere
        # no longer reads what it sent for its old units): a district's CSV of villages of two
        # districts is each one's to read, with its own villages' violations only
        violations = row.violations
        md = self.replica.current()
        if not principal.unscoped:
            # the header's place too: whose return it is, whatever its values are for
            places = {(row.org_unit, row.period),
                      *reported_places({"org_unit": row.org_unit, "period": row.period, "values": row.data_values})}
            if not any(_place_in_scope(principal, md, ou, pe) for ou, pe in places):
                raise error(403, f"submission {return_id!r} is for org unit {row.org_unit!r} in period {row.period}, "
                                 f"outside the scope of user {principal.username!r} "
                                 f"(subtree of {principal.org_unit!r})")
            # the violations of its places in the subtree for their period, as validationResults
            # and the alerts count them (a village moved since: its old district's)
            violations = [v for v in violations or []
                          if md.place_in(v.get("org_unit"), v.get("period"), principal.org_unit)]
        import_count = row.import_count or (
            {**NO_IMPORT, "ignored": row.value_count} if row.status == "REJECTED" else NO_IMPORT)
        # by the data set's timelyDays as it is now, as completeness counts it (a province that
        # gives 30 days instead of 10 sees last month's returns on time at once); as decided
        # at intake for a data set this replica no longer has
        ds = md.data_sets.get(row.data_set)
        in_time = on_time(Period.parse(row.period), row.received_at, ds.timely_days) if ds else row.on_time
        return {
            "id": row.id, "status": row.status, "dataSet": row.data_set, "orgUnit": row.org_unit,
            "period": row.period, "receivedAt": show(row.received_at), "onTime": in_time,
            "submittedBy": row.submitted_by, "validatedAt": show(row.validated_at),
            "aggregatedAt": show(row.aggregated_at), "importCount": import_count,
            **violations_out(violations or []),
        }

    # ---------------------------------------------------------------- following the return

    def _advance(self, events, status: str, values_of) -> None:
        """Move returns forward (never backward: events of one return may arrive out of order).

        ``values_of(event)``: the columns the event sets besides the status. A return
        that a later status reached first still gets them. Two statements per batch,
        however large: the status where it moves forward, the columns everywhere else.
        """
        with self.db.consume_many(events) as tx:
            # sorted: concurrent batches lock the rows they share in one order
            rows = sorted(({"id": e.data["return_id"], **values_of(e)} for e in tx.fresh), key=lambda r: r["id"])
            moved, overtaken = [], []
            if rows:
                forward, behind = _advance_statements(tuple(c for c in rows[0] if c != "id"))
                params = {"rows": serialization.dumps(rows), "status": status, "rank": STATUS_RANK[status]}
                moved = tx.execute(forward, params).all()
                if len(moved) < len(rows):
                    overtaken = tx.execute(behind, {**params, "moved": [r.id for r in moved]}).all()
        # counted once per return and status reached, also where a later status got there
        # first (aggregation's event may overtake validation's when services run apart:
        # VALIDATED was 3-7% short in a per-service burst)
        metrics.submissions_total.labels(status=status).inc(len(moved) + len(overtaken))
        if status == "REJECTED":
            # every value of a rejected return is ignored, as its importCount says
            metrics.data_values_total.labels(result="ignored").inc(sum(r.value_count for r in moved))
        for r in moved:
            log.info("return %s is %s", r.id, status)

    @rpc
    def received_in_time(self, places: list[list]) -> list[int]:
        """For notify's deadline check: of ``[data set, org unit, period, last day]`` places it
        found without an accepted return, the indexes of those with a return received by
        the last day (Asia/Vientiane) and not rejected. Such a return is waiting for
        validation (or notify has not heard of its acceptance yet): the place is not late,
        and an alert sent now could never be taken back."""
        if not places:
            return []
        ds, ou, pe, last = (list(x) for x in zip(*places, strict=True))
        with self.db.connect() as conn:
            return sorted(conn.execute(_RECEIVED_IN_TIME, {
                "ds": ds, "ou": ou, "pe": pe, "last": [dt.date.fromisoformat(d) for d in last],
                "tz": LOCAL_TZ.key}).scalars())

    @rpc
    def combos_in_flight(self, asked: dict[str, list[str]]) -> dict[str, list[str]]:
        """For the registry, before a data element's value type narrows or a combo goes: of
        ``asked`` (element -> combos), those a return carries that is received and not yet
        aggregated or rejected. Aggregation answers for the values it stores; a return on
        its way, validated against the metadata before the change, would bring in a value
        the change was refused for (2.5 under an INTEGER element, a combo that is gone)."""
        if not asked:
            return {}
        with self.db.connect() as conn:
            rows = conn.execute(_COMBOS_IN_FLIGHT, {"elements": sorted(asked)}).all()
        out: dict[str, list[str]] = {}
        for de, combo in rows:
            if combo in asked[de]:
                out.setdefault(de, []).append(combo)
        return out

    @rpc
    def data_sets_in_flight(self, asked: list[str]) -> list[str]:
        """For the registry, before a data set's period type changes: those of ``asked`` with
        a return received and not yet aggregated or rejected."""
        with self.db.connect() as conn:
            return list(conn.execute(_DATA_SETS_IN_FLIGHT, {"asked": sorted(asked)}).scalars())

    @subscribe("validation", "return_validated", batch=STATUS_BATCH)
    def on_return_validated(self, events):
        self._advance(events, "VALIDATED", lambda e: {"violations": e.data["violations"],
                                                      "validated_at": e.occurred_at})

    @subscribe("validation", "return_rejected", batch=STATUS_BATCH)
    def on_return_rejected(self, events):
        self._advance(events, "REJECTED", lambda e: {"violations": e.data["violations"],
                                                     "validated_at": e.occurred_at})

    @subscribe("aggregation", "return_aggregated", batch=STATUS_BATCH)
    def on_return_aggregated(self, events):
        self._advance(events, "AGGREGATED", lambda e: {"import_count": e.data["import_count"],
                                                       "aggregated_at": e.data["aggregated_at"]})
