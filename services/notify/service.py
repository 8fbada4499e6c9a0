"""Notify service.

Event flow::

    validation.return_rejected                   -> INVALID_RETURN to supervisors of the unit and its ancestors
    validation.return_validated (MEDIUM warnings) -> INVALID_RETURN likewise
    [notification rows] -> Dispatcher -> SMTP / webhook, retried with backoff
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from nameko.extensions import DependencyProvider

from services.notify import alerts
from services.notify import tables as t
from services.notify.dispatcher import Dispatcher
from shared.api import api_rpc, reply
from shared.config import Settings
from shared.delivery import Database
from shared.events import subscribe
from shared.periods import show
from shared.replica import KeepsMetadataReplica, Replica

log = logging.getLogger(__name__)


class Outgoing(DependencyProvider):
    """``self.outgoing``: wakes the dispatcher after new notifications are committed."""

    dispatcher = Dispatcher()

    def setup(self):
        self.webhook = bool(Settings.of(self.container).alert_webhook)

    def get_dependency(self, worker_ctx):
        return self


class NotifyService(KeepsMetadataReplica):
    name = "notify"

    db = Database(t.metadata)
    replica = Replica(t.replica)
    outgoing = Outgoing()

    def _invalid_return(self, event, outcome: str, violations: list[dict]) -> None:
        data = event.data
        md = self.replica.current()
        recipients = alerts.supervisors(md, data["org_unit"])
        details = {"outcome": outcome, "return_id": data["return_id"], "violations": violations,
                   "names": alerts.names(md, data["data_set"], data["org_unit"])}
        with self.db.consume(event) as tx:
            if tx.duplicate:
                return
            new = alerts.record(tx.conn, "INVALID_RETURN", recipients, data["org_unit"], data["data_set"],
                                data["period"], details, self.outgoing.webhook)
        if new:
            self.outgoing.dispatcher.wake()
        log.info("INVALID_RETURN for return %s: %d new notification(s) to %d supervisor(s)",
                 data["return_id"], len(new), len(recipients))

    @subscribe("validation", "return_rejected")
    def on_return_rejected(self, event):
        self._invalid_return(event, "REJECTED", event.data["violations"])

    @subscribe("validation", "return_validated")
    def on_return_validated(self, event):
        medium = [v for v in event.data["violations"] if v["importance"] == "MEDIUM"]
        if medium:
            self._invalid_return(event, "ACCEPTED_WITH_WARNINGS", medium)

    @api_rpc
    def list_notifications(self, principal, params: dict):
        principal.require("read")
        n = t.notification
        query = sa.select(n).order_by(n.c.id)
        if params.get("recipient"):
            query = query.where(n.c.recipient == params["recipient"])
        if params.get("type"):
            query = query.where(n.c.type == params["type"])
        if params.get("orgUnit"):
            query = query.where(n.c.org_unit == params["orgUnit"])
        with self.db.connect() as conn:
            rows = conn.execute(query.limit(10_000)).all()
        if not principal.unscoped:
            md = self.replica.current()
            rows = [r for r in rows if r.org_unit in md.org_units
                    and principal.covers_path(md.org_units[r.org_unit].current.path)]
        return reply({"notifications": [
            {"id": r.id, "type": r.type, "recipient": r.recipient, "orgUnit": r.org_unit,
             "dataSet": r.data_set, "period": r.period, "createdAt": show(r.created_at),
             "channel": r.channel, "status": r.status, "attempts": r.attempts,
             "sentAt": show(r.sent_at), "lastError": r.last_error} for r in rows]})
