"""Aggregation service.

Event flow::

    validation.return_validated -> aggregate_return -> [values + completeness + outbox]
                                                    -> aggregation.return_aggregated
    registry.metadata_changed   -> replica (+ stored values re-pathed after a move)

``return_aggregated`` is emitted in the same transaction that changed the
values, so a return is AGGREGATED only once its values are in every total.
"""
from __future__ import annotations

import datetime as dt
import logging

from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from services.aggregation import analytics, completeness, data_values, exports, facts, history
from services.aggregation import tables as t
from shared import collectors, metrics
from shared.api import STRATEGY_PARAMETERS, api_rpc, error, flag, id_scheme_refusal, reply
from shared.batches import disjoint_runs
from shared.config import Settings
from shared.delivery import Database
from shared.events import subscribe
from shared.periods import Period, today
from shared.replica import KeepsMetadataReplica, Replica, ReplicaAccess

log = logging.getLogger(__name__)

# a batch's returns per batch, at most (see shared.events: group commit)
RETURNS_PER_BATCH = 25


def _value_keys(data: dict) -> set[tuple]:
    return {(v["data_element"], v["category_option_combo"], v["org_unit"], v["period"]) for v in data["values"]}


def _repath_moved_units(conn, changes: dict) -> None:
    if changes.get("org_units"):
        # no return batch or history chunk writes paths meanwhile: one under way is waited
        # for, then re-pathed here; one after reads the new metadata (a batch that read the
        # old snapshot and wrote after the re-path left its months in the old district)
        facts.lock_all_year_totals(conn)
        moved = facts.repath(conn, changes["org_units"])
        if moved:
            log.info("re-pathed %d stored values after a hierarchy change", moved)


class YearTotals(DependencyProvider):
    """``self.year_totals``: the background rebuild of yearly totals a history load left pending."""

    rebuilder = facts.YearTotalsRebuilder()

    def get_dependency(self, worker_ctx):
        return self.rebuilder


def completeness_families(container):
    """Completeness of every data set's reporting period at each root: the number the
    province reports on, live, instead of DHIS2's manual "complete" clicks; and, while that
    period's returns may still come in on time, of the latest period whose deadline passed
    (``deadline="passed"``), the one an alert may judge."""
    db = collectors.provider(container, Database)
    replica = collectors.provider(container, Replica)
    with db.engine.connect() as conn:
        rows = completeness.current_rates(conn, ReplicaAccess(replica).current(conn), today(),
                                          Settings.of(container).reporting_start_date)
    labels = ["dataset", "org_unit", "period", "deadline"]
    yield collectors.gauge("statnet_completeness_rate", "Accepted returns / expected: the period being reported "
                           "(deadline ahead) and the latest whose deadline passed", labels,
                           [(d, o, p, due, r) for d, o, p, due, r, _ in rows])
    yield collectors.gauge("statnet_completeness_on_time_rate", "On-time returns / expected: the period being "
                           "reported (deadline ahead) and the latest whose deadline passed", labels,
                           [(d, o, p, due, r) for d, o, p, due, _, r in rows])


class AggregationService(KeepsMetadataReplica):
    name = "aggregation"
    # a few queries per data set: kept 10 s, so frequent scrapes cost nothing
    completeness_gauge = collectors.Source(completeness_families, cache_seconds=10)

    db = Database(t.metadata)
    replica = Replica(t.replica, on_apply=_repath_moved_units)
    year_totals = YearTotals()

    @subscribe("validation", "return_validated", batch=RETURNS_PER_BATCH)
    def aggregate_return(self, events):
        """Apply a batch of accepted returns: each one's values and the yearly totals they
        move, then the completeness rows they touch, in one transaction."""
        md = self.replica_knowing([e.data for e in events])  # behind the one that accepted it: wait
        with self.db.consume_many(events) as tx:
            # in submission order: of two returns with the same value, the later one wins,
            # as it would arriving alone (apply_returns compares seqs either way)
            fresh = sorted(tx.fresh, key=lambda e: e.data["seq"])
            facts.lock_unit_years(tx.conn, [e.data for e in fresh])
            md = self.replica.as_of(tx.conn, md)  # a unit moved while the locks were waited for
            counts: dict[str, dict] = {}
            # one statement for a run of returns that send no value in common
            for run in disjoint_runs([e.data for e in fresh], _value_keys):
                counts.update(facts.apply_returns(tx.conn, run, md))
            applied = [(e.data, counts[e.data["return_id"]]) for e in fresh]
            facts.register_completeness(tx.conn, [(e.data, e.occurred_at) for e in fresh], md)
            now = dt.datetime.now(dt.timezone.utc)
            tx.emit_all([("return_aggregated", {
                "return_id": data["return_id"], "data_set": data["data_set"], "org_unit": data["org_unit"],
                "period": data["period"], "import_count": counts, "aggregated_at": now}, data["return_id"])
                for data, counts in applied])
        for data, counts in applied:
            for result, n in counts.items():
                if n:
                    metrics.data_values_total.labels(result=result).inc(n)
            log.info("return %s aggregated: %s", data["return_id"], counts)

    @api_rpc
    def load_history(self, principal, params: dict, body: str):
        """``POST /api/history``: one chunk of past years' values, all or nothing."""
        principal.require("history.load")
        # DHIS2's import parameters that would change what a load means: refused, not ignored
        # (history stores what the file says, by code; a file's own empty values and
        # deleted lines delete, but a whole file as deletions is not a load of history)
        for name in STRATEGY_PARAMETERS:
            strategy = params.get(name)
            if strategy is not None and str(strategy).strip().upper() != "CREATE_AND_UPDATE":
                raise error(400, f"{name} {strategy!r} is not supported by a history load (it stores the "
                                 "file's values)")
        for name in ("idScheme", "dataElementIdScheme", "orgUnitIdScheme"):
            refusal = id_scheme_refusal(name, params.get(name))
            if refusal:
                raise error(400, refusal)
        number, given, line_offset = history.order_of(params)
        if given:
            with self.db.connect() as conn:
                history.check_begun(conn, number)
        elif number is None:  # a chunk sent alone is a load of its own, begun as it arrives
            number = self._begin_load()
        else:  # an older loader's start: loads begun from now on come after it
            with self.db.engine.begin() as conn:
                history.seen(conn, number)
        md = self.replica.current()
        with self.db.transaction() as tx:
            facts.hold_off_moves(tx.conn)  # the chunk's paths are derived from the replica
            loaded = history.load(tx.conn, md, params.get("dataSet"), body, principal.username,
                                  number, line_offset)
            places, cleared = loaded.pop("places"), loaded.pop("cleared")
            if places or cleared:
                # reported, as completeness already counts them: the deadline check must not
                # chase a unit for a month its history brought (notify keeps its own record);
                # and for validation, every place whose values changed, deletions included
                tx.emit("history_loaded", {
                    "batch": loaded["batch"], "data_set": params.get("dataSet"),
                    "places": [{"org_unit": ou, "period": pe} for ou, pe in places],
                    "cleared": [{"org_unit": ou, "period": pe} for ou, pe in cleared],
                    "loaded_at": dt.datetime.now(dt.timezone.utc)}, correlation_id=loaded["batch"])
        self.year_totals.chunk_loaded()
        for result, n in loaded["importCount"].items():
            if n:
                metrics.data_values_total.labels(result=result).inc(n)
        log.info("history %s: %d rows into %s, %s", loaded["batch"], loaded["rows"], params.get("dataSet"),
                 loaded["importCount"])
        return reply({"status": "OK", "load": number, **loaded})

    @api_rpc
    def begin_history(self, principal):
        """``POST /api/history/begin``: a number for a load of several chunks, which each of
        them carries (``load``): loads are ordered by it, the later begun winning."""
        principal.require("history.load")
        return reply({"load": self._begin_load()})

    def _begin_load(self) -> int:
        with self.db.engine.begin() as conn:  # committed at once: see history.begin
            return history.begin(conn)

    @api_rpc
    def history_status(self, principal):
        """``GET /api/history``: a load is over when no yearly total is pending and the
        statistics are refreshed."""
        principal.require("history.read")
        return reply(self._history_state())

    @api_rpc
    def history_done(self, principal):
        """``POST /api/history/done``: the loader has sent its last chunk, so the yearly
        totals are rebuilt now rather than after a pause with no chunk."""
        principal.require("history.load")
        self.year_totals.load_finished()
        return reply(self._history_state())

    def _history_state(self) -> dict:
        with self.db.connect() as conn:
            return {"pendingYearTotals": facts.pending_year_totals(conn),
                    "refreshingStatistics": self.year_totals.statistics_due}

    # ---------------------------------------------------------------- reading

    @rpc
    def stored_combos(self, asked: dict[str, list[str]]) -> dict[str, list[str]]:
        """For the registry, before a data element's value type or combos change."""
        with self.db.connect() as conn:
            return facts.stored_combos(conn, asked)

    @rpc
    def import_count(self, values: list[dict]) -> dict[str, int]:
        """For submission's dry run: the importCount these values would get if accepted now."""
        with self.db.connect() as conn:
            return facts.import_count(conn, values)

    @rpc
    def history_of_places(self, places: list[list[str]]) -> tuple[int, str]:
        """For a validation instance of the version before its migration 0007 (a rolling
        upgrade: refused, it dead-lettered returns): what ``history_series`` answers, a row
        per value. To go once no such instance runs."""
        with self.db.connect() as conn:
            return facts.history_of_places(conn, places)

    @rpc
    def history_series(self, places: list[list[str]]) -> tuple[int, str]:
        """For validation, which judges later returns on what history loads brought too:
        how many numbers (or deletions) loads left at these places, and the JSON list of
        their series (``{org_unit, data_element, combo, period_type, periods, figures, seqs}``)."""
        with self.db.connect() as conn:
            return facts.history_series(conn, places)

    @rpc
    def data_sets_with_returns(self, asked: list[str]) -> list[str]:
        """For the registry, before a data set's period type changes: those of ``asked``
        with an accepted return (or history) registered."""
        with self.db.connect() as conn:
            return facts.data_sets_with_returns(conn, asked)

    def _in_scope(self, principal, md, org_units, spans=()) -> None:
        """Each unit's data of every span of days asked (a period's, or an export's dates) is
        the caller's (``Metadata.held_throughout``); without spans, the unit is the caller's
        today. A village moved to another district is its old district's to read for the
        periods it spent there (its totals hold them), and the new district's from the move
        on: the new district read its months before the move by the village's code, though
        its own totals never held them, and the old one was refused the month of the move.
        Without spans (an export by ``lastUpdated``) a unit ever in the subtree is the
        caller's, and the caller reads only its days there (``data_values.values``)."""
        for ou in org_units:
            if principal.unscoped:
                continue
            if not md.ever_in(ou, principal.org_unit):
                principal.require_path(ou, md.org_units[ou].current.path)  # (never the caller's: the plain 403)
                continue
            for start, end in spans:
                if not md.held_throughout(ou, start, end, principal.org_unit):
                    raise error(403, f"org unit {ou!r} from {start} to {end} is outside the scope of user "
                                     f"{principal.username!r} (subtree of {principal.org_unit!r}): its data of "
                                     "those days is not all of the subtree's (it moved)")

    @api_rpc
    def analytics(self, principal, params: dict, fmt: str = "json"):
        """``GET /api/analytics`` (JSON), ``.csv`` and ``.sdmx.csv``: one query, three shapes."""
        principal.require("read")
        md = self.replica.current()
        params, filters = analytics.dhis2_params(params)
        query = analytics.parse_query(params, md, principal, filters)
        if fmt == "sdmx" and query.merged:
            raise error(400, f"filter {', '.join(sorted(query.merged))}: an SDMX observation has one "
                             "REF_AREA and one TIME_PERIOD; ask several as a dimension")
        self._in_scope(principal, md, query.scoped, [(p.start, p.end) for p in query.pe])
        with self.db.connect() as conn:
            rows = analytics.totals(conn.execution_options(isolation_level="REPEATABLE READ"), query, md)
        rows = analytics.ordered(rows, params)
        if fmt == "csv":
            return reply(exports.analytics_csv(rows, md, query.filters), content_type=exports.CSV)
        if fmt == "sdmx":
            flows = exports.dataflows_for(params, [i.data_element for i in query.dx], md)
            body = exports.sdmx_csv(rows, md, flows, params.get("labels", "id"), params.get("locale", "en"))
            return reply(body, content_type=exports.SDMX_CSV)
        body = {"rows": analytics.as_json(rows, query.filters)}
        if not flag(params, "skipMeta"):
            body["metaData"] = analytics.names(query, md)
        return reply(body)

    @api_rpc
    def data_values(self, principal, params: dict, fmt: str = "json"):
        """``GET /api/dataValueSets`` (JSON) and ``.csv``: the stored values, as DHIS2 exports them."""
        principal.require("read")
        md = self.replica.current()
        asked = data_values.parse(params, md)
        # the periods asked, or the span of dates
        spans = [(p.start, p.end) for p in asked["periods"]] or (
            [(asked["startDate"], asked["endDate"])] if asked["startDate"] and asked["endDate"] else [])
        self._in_scope(principal, md, asked["org_units"], spans)
        with self.db.connect() as conn:
            found = data_values.values(conn, md, asked, None if principal.unscoped else principal.org_unit)
        if fmt == "csv":
            return reply(data_values.as_csv(found, asked["deleted"]), content_type=exports.CSV)
        return reply(data_values.as_json(asked, found))

    @api_rpc
    def completeness(self, principal, params: dict):
        principal.require("read")
        md = self.replica.current()
        if params.get("ou") == "USER_ORGUNIT":  # as in analytics: the user's scope root
            roots = analytics.user_roots(md, principal, today(), params)
            if len(roots) != 1:
                raise error(400, f"ou: USER_ORGUNIT is {len(roots)} roots for user {principal.username!r}: "
                                 "name the org unit")
            params = {**params, "ou": roots[0]}
        with self.db.connect() as conn:
            ou, body = completeness.completeness(conn, md, params)
        period = Period.parse_output(body["period"])
        self._in_scope(principal, md, [ou], [(period.start, period.end)])
        return reply(body)
