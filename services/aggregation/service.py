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

from services.aggregation import analytics, facts
from services.aggregation import tables as t
from shared import metrics
from shared.api import api_rpc, reply
from shared.delivery import Database
from shared.events import Transient, subscribe
from shared.replica import KeepsMetadataReplica, Replica

log = logging.getLogger(__name__)


def _repath_moved_units(conn, changes: dict) -> None:
    if changes.get("org_units"):
        moved = facts.repath(conn, changes["org_units"])
        if moved:
            log.info("re-pathed %d stored values after a hierarchy change", moved)


class AggregationService(KeepsMetadataReplica):
    name = "aggregation"

    db = Database(t.metadata)
    replica = Replica(t.replica, on_apply=_repath_moved_units)

    @subscribe("validation", "return_validated")
    def aggregate_return(self, event):
        data = event.data
        md = self.replica.current()
        unknown = {v["org_unit"] for v in data["values"]} - set(md.org_units)
        unknown |= {v["data_element"] for v in data["values"]} - set(md.data_elements)
        if unknown:
            # this replica is behind the one that accepted the return: wait for it
            raise Transient(f"metadata not yet replicated here: {sorted(unknown)}")
        with self.db.consume(event) as tx:
            if tx.duplicate:
                return
            counts = facts.apply_return(tx.conn, data, md)
            facts.register_completeness(tx.conn, data, event.occurred_at)
            tx.emit("return_aggregated", {
                "return_id": data["return_id"], "data_set": data["data_set"],
                "org_unit": data["org_unit"], "period": data["period"], "import_count": counts,
                "aggregated_at": dt.datetime.now(dt.timezone.utc)})
        for result, n in counts.items():
            if n:
                metrics.data_values_total.labels(result=result).inc(n)
        log.info("return %s aggregated: %s", data["return_id"], counts)

    @api_rpc
    def analytics(self, principal, params: dict):
        principal.require("read")
        md = self.replica.current()
        query = analytics.parse_query(params, md)
        for ou in query.ou:
            principal.require_path(ou, md.org_units[ou].current.path)
        with self.db.connect() as conn:
            rows = analytics.totals(conn, query, md)
        return reply({"rows": rows, "metaData": analytics.names(query, md)})
