"""Validation service.

Event flow::

    submission.return_received -> validate_return -> validation.return_validated (accepted, with warnings)
                                                  -> validation.return_rejected  (a HIGH violation)

The decision is taken once per return: a redelivered ``return_received``
finds the return in the inbox and changes nothing.
"""
from __future__ import annotations

import logging

from nameko.rpc import rpc

from services.validation import checks
from services.validation import tables as t
from shared import metrics
from shared.delivery import Database
from shared.events import subscribe
from shared.replica import KeepsMetadataReplica, Replica

log = logging.getLogger(__name__)


class ValidationService(KeepsMetadataReplica):
    name = "validation"

    db = Database(t.metadata)
    replica = Replica(t.replica)

    @subscribe("submission", "return_received")
    def validate_return(self, event):
        data = event.data
        violations = checks.check_return(data["data_set"], data["values"], self.replica.current())
        rejected = checks.rejected(violations)
        ref = {k: data[k] for k in ("return_id", "seq", "data_set", "org_unit", "period", "received_at",
                                    "on_time", "submitted_by")}
        with self.db.consume(event) as tx:
            if tx.duplicate:
                return
            tx.execute(t.validation_result.insert().values(
                return_id=data["return_id"], seq=data["seq"], data_set=data["data_set"],
                org_unit=data["org_unit"], period=data["period"], accepted=not rejected,
                violations=violations))
            if rejected:
                tx.emit("return_rejected", {**ref, "violations": violations})
            else:
                tx.emit("return_validated", {**ref, "values": data["values"], "violations": violations})
        for v in violations:
            metrics.validation_violations_total.labels(importance=v["importance"]).inc()
        log.info("return %s %s with %d violation(s)", data["return_id"],
                 "rejected" if rejected else "accepted", len(violations))

    @rpc
    def check_return(self, ret: dict) -> dict:
        """Dry run: what validation would decide about a return, storing nothing."""
        violations = checks.check_return(ret["data_set"], ret["values"], self.replica.current())
        rejected = checks.rejected(violations)
        n = len(ret["values"])
        return {"status": "REJECTED" if rejected else "VALIDATED", "violations": violations,
                "import_count": {"imported": 0 if rejected else n, "updated": 0,
                                 "ignored": n if rejected else 0, "deleted": 0}}
