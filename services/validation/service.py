"""Validation service.

Event flow::

    submission.return_received -> validate_return -> validation.return_validated (accepted, with warnings)
                                                  -> validation.return_rejected  (a HIGH violation)
    aggregation.history_loaded -> mark_history    -> [places marked; their values taken in,
                                                      asked of aggregation, before a return about the unit]

The decision is taken once per return: a redelivered ``return_received``
finds the return in the inbox and changes nothing. Rules see the merged view
of each place (what was accepted before, overlaid with this return) and
outliers the unit's own past, both from ``accepted_value`` (returns' values) over
``history_series`` (what history loads brought), which only this service writes: one
return's validation makes no RPC round trip, but the first one
about a unit after a history load, which asks aggregation for what the load brought.
"""
from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from nameko.exceptions import RemoteError
from nameko.rpc import rpc

from services.validation import checks
from services.validation import tables as t
from shared import local, metrics, serialization
from shared.api import ApiError, api_rpc, error, flag, reply
from shared.batches import InOrder, disjoint_runs
from shared.schemas.api import OUTLIER, violations_out
from shared.db import lock_in_order
from shared.delivery import Database
from shared.events import Transient, subscribe
from shared.periods import Period, PeriodError, show
from shared.local import RpcProxy
from shared.replica import KeepsMetadataReplica, Replica
from shared.returns import reported_places

log = logging.getLogger(__name__)

V = t.accepted_value

# A document of places (unit, period, its type, numbered) beside one of values naming
# their place by number: what a place's hundred values share is sent and parsed once.
_PLACES_DOC = ("json_to_recordset(CAST(:places AS json)) "
               "AS p(place int, org_unit text, period text, period_type text, seq bigint)")

HS = t.history_series


def _of_series(alias: str) -> str:
    """SQL: the row ``alias`` is of the sent series ``s`` (unit, element, combo, period type)."""
    return (f"{alias}.org_unit = s.org_unit AND {alias}.data_element = s.data_element "
            f"AND {alias}.combo = s.combo AND {alias}.period_type = s.period_type")


# The stored values of the places a return touches, and the previous periods of its
# elements at its units (the HISTORY_PERIODS newest of the same period type), in one query;
# each from the returns' values, and, where no return's is, from what history loads brought.
_STORED = sa.text(f"""
    WITH p AS (SELECT * FROM {_PLACES_DOC}),
    sent AS (
        SELECT p.org_unit, p.period, p.period_type, s.data_element, s.combo
        FROM json_to_recordset(CAST(:sent AS json)) AS s(place int, data_element text, combo text)
        JOIN p USING (place))
    SELECT 'place' AS kind, v.org_unit, v.period, v.data_element, v.combo, v.value, v.seq,
           CAST(NULL AS numeric[]) AS past
    FROM p
    -- one index range per place, whatever the table's size: LATERAL, kept apart by
    -- OFFSET 0 (as a join, the planner took a hash join over a sequential scan of every
    -- accepted value: 30-70 ms a batch at 450,000 rows, and growing with every return)
    CROSS JOIN LATERAL (
        SELECT * FROM {V.fullname} v WHERE v.org_unit = p.org_unit AND v.period = p.period OFFSET 0) v
    UNION ALL
    -- what loads brought to the place (a return's value for the same key wins: _stored)
    SELECT 'loaded', p.org_unit, p.period, h.data_element, h.combo, h.figures[h.i], h.seqs[h.i], NULL
    FROM p
    CROSS JOIN LATERAL (
        SELECT h.*, array_position(h.periods, p.period) AS i FROM {HS.fullname} h
        WHERE h.org_unit = p.org_unit AND h.period_type = p.period_type OFFSET 0) h
    WHERE h.i IS NOT NULL
    UNION ALL
    -- a series a row, newest first: a unit's year of history is 100 rows, not 1,200 (each
    -- a row object to build: most of the pipeline's CPU a return once outliers had a past)
    SELECT 'history', s.org_unit, s.period, s.data_element, s.combo, NULL, NULL, h.past
    FROM sent s
    -- no period older than the returns' own HISTORY_PERIODS-th newest number can be among
    -- the newest: both halves start there (read whole, a series of five years of returns
    -- was sixty rows sorted for twelve)
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT v.period FROM {V.fullname} v
                         WHERE {_of_series("v")} AND v.period < s.period AND v.value IS NOT NULL
                         ORDER BY v.period DESC OFFSET {checks.HISTORY_PERIODS - 1} LIMIT 1), '') AS since) c
    CROSS JOIN LATERAL (
        SELECT array_agg(x.value ORDER BY x.period DESC) AS past FROM (
            SELECT x.value, x.period FROM (
                -- each period once: a return's value (or deletion) over a load's
                SELECT DISTINCT ON (u.period) u.value, u.period FROM (
                    SELECT v.value, v.period, 0 AS loaded FROM {V.fullname} v
                    WHERE {_of_series("v")} AND v.period < s.period AND v.period >= c.since
                    UNION ALL
                    SELECT l.figure, l.period, 1 FROM {HS.fullname} h, unnest(h.periods, h.figures) AS l(period, figure)
                    WHERE {_of_series("h")} AND l.period < s.period AND l.period >= c.since) u
                ORDER BY u.period DESC, u.loaded) x
            WHERE x.value IS NOT NULL
            ORDER BY x.period DESC LIMIT {checks.HISTORY_PERIODS}) x) h
    WHERE h.past IS NOT NULL
""")

# Accepted values stored: under the places' locks the group's read of what is stored is
# exact, so a value not there yet is plainly inserted and one there is updated where this
# return is newer. An upsert's speculative insertion cost a third more server CPU for a
# batch's 1,500 new values (13.0 against 9.7 ms, national benchmark's database).
_ACCEPTED_ROWS = ("json_to_recordset(CAST(:rows AS json)) AS x(place int, data_element text, combo text, "
                  f"value numeric) JOIN {_PLACES_DOC} USING (place)")
_STORE_NEW = sa.text(f"""
    INSERT INTO {V.fullname} (org_unit, period, period_type, data_element, combo, value, seq)
    SELECT p.org_unit, p.period, p.period_type, x.data_element, x.combo, x.value, p.seq
    FROM {_ACCEPTED_ROWS}
""")
# Values there already: an upsert that always meets its row, so that each is found by the
# primary key. As an UPDATE ... FROM, the planner (a table without statistics: autovacuum
# off, as on this machine) reached each value by the place index, every one of the
# place's values filtered for it: 1,500 x 100 rows for 15 corrections, 115 ms a statement.
_STORE_NEWER = sa.text(f"""
    INSERT INTO {V.fullname} AS v (org_unit, period, period_type, data_element, combo, value, seq)
    SELECT p.org_unit, p.period, p.period_type, x.data_element, x.combo, x.value, p.seq
    FROM {_ACCEPTED_ROWS}
    ON CONFLICT (org_unit, data_element, combo, period) DO UPDATE
       SET value = excluded.value, seq = excluded.seq WHERE v.seq < excluded.seq
""")

H = t.history_place

_MARK = sa.text(f"""
    INSERT INTO {H.fullname} (org_unit, period)
    SELECT DISTINCT org_unit, period FROM json_to_recordset(CAST(:places AS json)) AS p(org_unit text, period text)
    ORDER BY org_unit, period  -- (two chunks' marks of shared places lock them in one order)
    ON CONFLICT (org_unit, period) DO UPDATE SET marked = nextval('{t.history_marked.schema}.{t.history_marked.name}')
""")
_MARKED = sa.text(f"SELECT org_unit, period, marked FROM {H.fullname} "
                  "WHERE org_unit = ANY(CAST(:units AS text[])) ORDER BY org_unit, period")
# What aggregation holds for a marked place is history's last word on it, merged into the
# series period by period: it replaces what a load brought before, among loads by
# aggregation's own order (a later load, a later line; 0, before loads had one, loses to
# any; a tie to what is taken now), so that two takes of one place committing in either
# order leave the later load's value (the earlier read committed last brought a corrected
# value back). Rows in key order: two takes of shared series lock them in one order.
_TAKE = sa.text(f"""
    INSERT INTO {HS.fullname} AS h (org_unit, data_element, combo, period_type, periods, figures, seqs)
    SELECT org_unit, data_element, combo, period_type, periods, figures, seqs
    FROM json_to_recordset(CAST(:rows AS json))
         AS x(org_unit text, data_element text, combo text, period_type text, periods text[],
              figures numeric[], seqs bigint[])
    ORDER BY org_unit, data_element, combo, period_type
    ON CONFLICT (org_unit, data_element, combo, period_type) DO UPDATE
       SET (periods, figures, seqs) = (
           SELECT array_agg(m.period ORDER BY m.period), array_agg(m.figure ORDER BY m.period),
                  array_agg(m.seq ORDER BY m.period)
           FROM (SELECT DISTINCT ON (u.period) u.period, u.figure, u.seq FROM (
                     SELECT o.*, 0 AS now FROM unnest(h.periods, h.figures, h.seqs) AS o(period, figure, seq)
                     UNION ALL
                     SELECT n.*, 1 FROM unnest(excluded.periods, excluded.figures, excluded.seqs)
                                        AS n(period, figure, seq)) u
                 ORDER BY u.period, u.seq <> 0 DESC, u.seq DESC, u.now DESC) m)
""")
# a place marked again while its values were on their way keeps the new mark
_UNMARK = sa.text(f"""
    DELETE FROM {H.fullname} h
    USING json_to_recordset(CAST(:taken AS json)) AS x(org_unit text, period text, marked bigint)
    WHERE h.org_unit = x.org_unit AND h.period = x.period AND h.marked = x.marked
""")


def _units_of(returns: list[dict]) -> set[str]:
    return {ou for data in returns for ou, _ in reported_places(data)} | {data["org_unit"] for data in returns}


def _places_document(places) -> tuple[list[dict], dict]:
    """The places document (see _PLACES_DOC) for (unit, period, seq) triples, and each
    (unit, period)'s number in it."""
    doc, number = [], {}
    for ou, pe, seq in places:
        number[(ou, pe)] = len(doc)
        doc.append({"place": len(doc), "org_unit": ou, "period": pe, "period_type": Period.parse(pe).type,
                    "seq": seq})
    return doc, number


# the return fields every decision event carries
_REF = ("return_id", "seq", "data_set", "org_unit", "period", "received_at", "on_time", "submitted_by")

# a batch's returns per batch, at most (see shared.events: group commit)
RETURNS_PER_BATCH = 25

# transaction lock space of places being judged (shared.db.lock_in_order)
_PLACES = 4250


def _checked(data: dict, md) -> tuple[list[dict], dict]:
    """The return's value-type violations and its numbers by place (nothing for an unknown
    data set, which ``check_return`` rejects)."""
    ds = md.data_sets.get(data["data_set"])
    if ds is None:
        return [], {}
    violations, places = checks.check_values(ds, data["values"], md)
    # a return of no values still reports its place (completeness counts it): its rules are
    # judged on what the place holds (with NEVER_SKIP, "0 > 0" was never asked of it)
    return violations, places or {(data["org_unit"], data["period"]): {}}


def _stored(conn, places: dict) -> checks.Stored:
    # (a place whose values are all text sends no number, and is still judged on what it
    # holds: read as empty, a HIGH rule rejected a return of comments on a good month)
    if not places:
        return checks.Stored.empty()
    doc, number = _places_document((ou, pe, None) for ou, pe in places)
    sent = [{"place": number[place], "data_element": de, "combo": coc}
            for place, values in places.items() for (de, coc) in values]
    stored, loaded = checks.Stored({}, {}), {}
    for kind, org_unit, period, de, combo, value, seq, past in conn.execute(
            _STORED, {"places": serialization.dumps(doc), "sent": serialization.dumps(sent)}):
        if kind == "place":
            stored.values.setdefault((org_unit, period), {})[(de, combo)] = (value, seq)
        elif kind == "loaded":  # (no seq: not a row of accepted_value, see _store_accepted)
            loaded.setdefault((org_unit, period), {})[(de, combo)] = (value, None)
        else:  # (each period its own past: one unit's element sent for two months had both
            # pasts joined, the later month's periods in the earlier one's)
            stored.history[(org_unit, de, combo, period)] = past
    for place, values in loaded.items():  # a return's value over a load's
        stored.values[place] = {**values, **stored.values.get(place, {})}
    return stored


def _store_accepted(tx, accepted: list[tuple[dict, int]], stored: checks.Stored) -> None:
    """Every numeric value of accepted returns ((places, seq) each) into ``accepted_value``;
    ``stored``: what the places held when read, under their locks."""
    doc, number = _places_document((ou, pe, seq) for places, seq in accepted for ou, pe in places)
    new, newer = [], []
    for places, _ in accepted:
        for place, de, combo, value in checks.numbers_to_store(places):
            # a row of accepted_value there (a load's value read from history_series has no
            # seq; one an instance of the version before 0007 took in has its own, <= 0)
            there = stored.values.get(place, {}).get((de, combo), (None, None))[1] is not None
            (newer if there else new).append({"place": number[place], "data_element": de, "combo": combo,
                                              "value": value})
    places_doc = serialization.dumps(doc)  # one document for both statements
    for statement, rows in ((_STORE_NEW, new), (_STORE_NEWER, newer)):
        if rows:
            tx.execute(statement, {"places": places_doc, "rows": serialization.dumps(rows)})


_JUDGED = sa.text(f"SELECT return_id FROM {t.validation_result.fullname} "
                  "WHERE return_id = ANY(CAST(:ids AS text[]))")


def _not_judged(tx, events) -> list[dict]:
    """The returns of fresh events that no decision exists for yet, each once. The inbox
    keeps an event from being handled twice; this keeps a return from being judged twice
    when it comes again under another event id (published anew by hand, say): once
    judged, it stays judged, rather than failing on its stored result into the
    dead-letter queue."""
    first: dict[str, dict] = {}
    for e in events:
        first.setdefault(e.data["return_id"], e.data)
    returns = list(first.values())
    if not returns:
        return []
    judged = set(tx.execute(_JUDGED, {"ids": [r["return_id"] for r in returns]}).scalars())
    if judged:
        log.info("%d return(s) judged before, not again: %s", len(judged), ", ".join(sorted(judged)))
    return [r for r in returns if r["return_id"] not in judged]


class ValidationService(KeepsMetadataReplica):
    name = "validation"

    db = Database(t.metadata)
    replica = Replica(t.replica)
    # what history loads brought to a unit, asked when a return about it comes
    aggregation_rpc = RpcProxy("aggregation")
    in_order = InOrder()

    @subscribe("aggregation", "history_loaded")
    def mark_history(self, event):
        """Past values loaded in bulk: their places are marked, and their values taken in
        before a return about one of their units is judged (``_take_history``)."""
        with self.db.consume(event) as tx:
            if not tx.duplicate:
                tx.execute(_MARK, {"places": serialization.dumps(event.data["places"] + event.data["cleared"])})

    def _take_history(self, units: set[str], share: float = 1.0) -> None:
        """Into ``history_series``, what history loads gave the units' marked places (every
        period: a rule reads the return's own, outliers the earlier ones), asked of
        aggregation, which holds it; then the marks are gone. One query when nothing is
        marked, as after the first return about each unit."""
        with self.db.connect() as conn:
            marked = conn.execute(_MARKED, {"units": sorted(units)}).all()
        if not marked:
            return
        try:
            n, rows = local.ask(self.aggregation_rpc, "aggregation", "history_series",
                                [[m.org_unit, m.period] for m in marked], share=share)
        except RemoteError as exc:
            if exc.exc_type != "MethodNotFound":
                raise
            # an aggregation of the version before (a rolling upgrade): asked again once it
            # is upgraded, as when it is down
            raise local.Unavailable("aggregation does not answer history_series yet (an instance of the "
                                    "version before validation 0007)") from None
        with self.db.transaction() as tx:
            # under the places' locks, as a return's values are stored: a batch judging one
            # of them meanwhile has read what it will insert beside
            lock_in_order(tx.conn, _PLACES, (f"{m.org_unit}|{m.period}" for m in marked))
            if n:
                tx.execute(_TAKE, {"rows": rows})
            tx.execute(_UNMARK, {"taken": serialization.dumps([m._asdict() for m in marked])})
        log.info("took in %d value(s) history loaded at %d place(s)", n, len(marked))

    @subscribe("submission", "return_received", batch=RETURNS_PER_BATCH)
    def validate_return(self, events):
        """Judge a batch of returns in one transaction, each exactly as if alone."""
        with self.in_order.turn() as turn:
            self._validate_returns(events, turn)

    def _validate_returns(self, events, turn) -> None:
        received = [e.data for e in events]
        md = self.replica_knowing(received)
        try:
            self._take_history(_units_of(received))
        except local.Unavailable as exc:
            # judged without the history it would see once aggregation answers: wait for it
            raise Transient(str(exc)) from None
        # the batch delivered before this one locks its places first (InOrder); waited for
        # before this one's transaction begins, so that it never waits on this one's rows
        turn.wait()
        with self.db.consume_many(events) as tx:
            returns = _not_judged(tx, tx.fresh)
            # returns in submission order, each with its checked values by place
            work = sorted(((data, _checked(data, md)) for data in returns), key=lambda w: w[0]["seq"])
            # one judgement at a time per place, across batches and instances; every lock
            # up front in one order, so two batches cannot deadlock
            lock_in_order(tx.conn, _PLACES, (f"{ou}|{pe}" for _, (_, places) in work for ou, pe in places))
            turn.locked()
            results, decisions = [], []
            # one read of what is stored serves a run of returns about different units; a
            # return about a unit already in the run is judged after it, on what it left
            for group in disjoint_runs(work, lambda w: {ou for ou, _ in w[1][1]}):
                stored = _stored(tx, {place: sent for _, (_, places) in group for place, sent in places.items()})
                accepted = []
                for data, checked in group:
                    places = checked[1]
                    violations = checks.check_return(data["data_set"], data["values"], md, stored,
                                                     checked=checked)
                    rejected = checks.rejected(violations)
                    reported = sorted({(data["org_unit"], data["period"]), *places})
                    results.append({"return_id": data["return_id"], "seq": data["seq"],
                                    "data_set": data["data_set"], "org_unit": data["org_unit"],
                                    "period": data["period"], "accepted": not rejected,
                                    "violations": violations, "places": [list(x) for x in reported],
                                    "org_units": sorted({ou for ou, _ in reported}),
                                    "periods": sorted({pe for _, pe in reported})})
                    ref = {k: data[k] for k in _REF}
                    if rejected:
                        decisions.append(("return_rejected", {**ref, "violations": violations},
                                          data["return_id"]))
                    else:
                        accepted.append((places, data["seq"]))
                        decisions.append(("return_validated", {**ref, "values": data["values"],
                                                               "violations": violations}, data["return_id"]))
                if accepted:
                    _store_accepted(tx, accepted, stored)
            # one time for the decision: the result's checkedAt and the event's, which the
            # submission shows as validatedAt (they were two, milliseconds apart)
            decided = dt.datetime.now(dt.timezone.utc)
            if results:
                tx.execute(t.validation_result.insert(), [{**r, "checked_at": decided} for r in results])
            tx.emit_all(decisions, occurred_at=decided)
        for kind, payload, return_id in decisions:
            for v in payload["violations"]:
                if v["rule"] == OUTLIER:
                    metrics.outliers_total.inc()
                else:
                    metrics.validation_violations_total.labels(importance=v["importance"]).inc()
            log.info("return %s %s with %d violation(s)", return_id,
                     "rejected" if kind == "return_rejected" else "accepted", len(payload["violations"]))

    @rpc
    def check_return(self, ret: dict) -> dict:
        """Dry run: what validation would decide about a return, storing nothing."""
        md = self.replica.current()
        # (within half the caller's time: a silent aggregation is named by this call)
        self._take_history(_units_of([ret]), share=0.5)
        checked = _checked(ret, md)
        with self.db.connect() as conn:
            stored = _stored(conn, checked[1])
        violations = checks.check_return(ret["data_set"], ret["values"], md, stored, checked=checked)
        rejected = checks.rejected(violations)
        return {"status": "REJECTED" if rejected else "VALIDATED", "violations": violations}

    @api_rpc
    def results(self, principal, params: dict):
        """``GET /api/validationResults?ou=&pe=&ds=``: decisions on the returns of a subtree."""
        principal.require("read")
        md = self.replica.current()
        ou = params.get("ou") or principal.org_unit
        problems = []
        if not ou:
            problems.append("ou is required (e.g. ou=03)")
        unit = md.org_units.get(ou) if ou else None
        if ou and unit is None:
            problems.append(f"ou: unknown org unit {ou!r}")
        if unit is not None and not principal.unscoped and not md.ever_in(ou, principal.org_unit):
            principal.require_path(ou, unit.current.path)  # never the caller's: the plain 403
        r_ = t.validation_result
        query = sa.select(r_).order_by(r_.c.seq.desc())
        pe = params.get("pe")
        within: set[str] = set()
        if pe:
            try:
                # a period and the finer ones inside it: pe=2026 lists a monthly data set's months
                within = {p.code for p in Period.parse_output(pe).and_finer()}
            except PeriodError as exc:
                problems.append(f"pe: {exc}")
            codes = sa.cast(sorted(within), ARRAY(sa.Text))
            query = query.where(sa.or_(r_.c.periods.overlap(codes),
                                       sa.and_(r_.c.periods.is_(None), r_.c.period == sa.func.any(codes))))
        if params.get("ds"):
            if params["ds"] not in md.data_sets:
                problems.append(f"ds: unknown data set {params['ds']!r}")
            query = query.where(r_.c.data_set == params["ds"])
        try:
            accepted = flag(params, "accepted")
        except ApiError as exc:  # flag's own 400, told with the others
            problems.append(exc.body["message"])
            accepted = None
        if accepted is not None and params.get("accepted") != "":
            query = query.where(r_.c.accepted == accepted)
        raw_limit = str(params.get("limit", "1000"))
        digits = raw_limit.lstrip("0")
        if not (raw_limit.isascii() and raw_limit.isdigit() and digits):
            problems.append(f"limit: {params.get('limit')!r} is not a number from 1 (at most 10000 are listed)")
        if problems:  # every one at once, as analytics and dataValueSets tell them
            raise error(400, "; ".join(problems))
        limit = min(int(digits), 10000) if len(digits) <= 5 else 10000  # (int() reads 4,300 digits at most)
        # A return is listed for the places it reported inside the subtree, each only for the
        # periods its unit was in it (as analytics counts it: a village moved away in
        # November shows its October returns here, its November ones under its new
        # district), with the violations of those places alone. A district's CSV of its
        # villages is one return; each village's violations go to its own supervisors.
        units = sorted(md.subtree(ou))
        query = query.where(sa.or_(
            r_.c.org_units.overlap(sa.cast(sa.bindparam("units"), ARRAY(sa.Text))),
            sa.and_(r_.c.org_units.is_(None), r_.c.org_unit == sa.func.any(sa.cast(sa.bindparam("units"),
                                                                                   ARRAY(sa.Text))))))

        def inside(unit: str, period: str) -> bool:
            # in the asked unit's subtree and the caller's for that period: a village's new
            # district does not see the results of its months before the move by its code
            return (not pe or period in within) and md.place_in(unit, period, ou) and (
                principal.unscoped or md.place_in(unit, period, principal.org_unit))

        rows = []
        with self.db.connect() as conn:
            for r in conn.execution_options(stream_results=True, yield_per=500).execute(query, {"units": units}):
                places = r.places or [[r.org_unit, r.period]]  # (written before its places were kept)
                if not any(inside(unit, period) for unit, period in places):
                    continue
                rows.append((r, [v for v in r.violations if inside(v["org_unit"], v["period"])]))
                if len(rows) == limit:
                    break
        return reply({"orgUnit": ou, "validationResults": [{
            "returnId": r.return_id, "dataSet": r.data_set, "orgUnit": r.org_unit, "period": r.period,
            "status": "VALIDATED" if r.accepted else "REJECTED", "checkedAt": show(r.checked_at),
            **violations_out(seen)} for r, seen in rows]})

