"""Service methods in isolation with nameko's worker_factory (dependencies replaced)."""
import contextlib
import datetime as dt
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
from nameko.testing.services import worker_factory

from services.gateway.http import HttpError
from services.gateway.service import GatewayService
from services.submission.service import SubmissionService
from services.validation.service import ValidationService
from shared.events import Event
from tests.support.metadata import data_set, element, rule, snapshot


class FakeTx:
    def __init__(self, duplicate=False):
        self.duplicate = duplicate
        self.emitted = []
        self.executed = []
        self.conn = MagicMock()

    def execute(self, stmt, params=None):
        self.executed.append(stmt)
        return MagicMock(rowcount=1)

    def emit(self, event_type, data, correlation_id=None):
        self.emitted.append((event_type, data))

    def emit_all(self, events, along=None, occurred_at=None):
        for event_type, data, correlation_id in events:
            self.emit(event_type, data, correlation_id)


class FakeDb:
    def __init__(self, duplicate=False):
        self.tx = FakeTx(duplicate)

    @contextlib.contextmanager
    def consume(self, event):
        yield self.tx

    transaction = consume

    @contextlib.contextmanager
    def connect(self):
        # reads outside a transaction find nothing (validation: no history marked)
        yield MagicMock(execute=lambda *a, **k: MagicMock(all=lambda: []))

    @contextlib.contextmanager
    def consume_many(self, events):
        self.tx.fresh = [] if self.tx.duplicate else list(events)
        yield self.tx


MD = snapshot({"LA": None, "V": "LA"}, elements=[element("POP", combos=("M", "F"))],
              data_sets=[data_set("DS", ["POP"], level=2)],
              rules=[rule("POS", "#{POP}", "greater_than", "0", strategy="NEVER_SKIP", data_set="DS")])


def received(m, f):
    data = {"return_id": "r1", "seq": 7, "data_set": "DS", "org_unit": "V", "period": "2025",
            "received_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "on_time": True,
            "submitted_by": "u",
            "values": [{"data_element": "POP", "category_option_combo": "M", "org_unit": "V", "period": "2025",
                        "value": str(m), "comment": None},
                       {"data_element": "POP", "category_option_combo": "F", "org_unit": "V", "period": "2025",
                        "value": str(f), "comment": None}]}
    return Event("e1", "return_received", "submission", 1, data["received_at"], "r1", data)


@pytest.mark.parametrize("m, f, expected", [(0, 0, "return_rejected"), (3, 4, "return_validated")])
def test_validation_emits_one_decision(m, f, expected):
    db = FakeDb()
    service = worker_factory(ValidationService, db=db, replica=SimpleNamespace(current=lambda: MD, invalidate=lambda: None))
    service.validate_return([received(m, f)])
    assert [e[0] for e in db.tx.emitted] == [expected]
    payload = db.tx.emitted[0][1]
    assert payload["return_id"] == "r1" and payload["seq"] == 7
    assert ("values" in payload) == (expected == "return_validated")


def test_validation_does_nothing_for_a_redelivered_event():
    db = FakeDb(duplicate=True)
    service = worker_factory(ValidationService, db=db, replica=SimpleNamespace(current=lambda: MD, invalidate=lambda: None))
    service.validate_return([received(0, 0)])
    assert db.tx.emitted == [] and db.tx.executed == []


def test_validation_waits_for_its_replica_rather_than_reject_on_a_code_it_does_not_know():
    """Submission checked the codes: unknown here means this replica is behind (a restart
    before its catch-up, a schema reset). The batch is retried, nothing is decided."""
    from shared.events import Transient

    behind = snapshot({"LA": None, "V": "LA"}, elements=[element("POP", combos=("M", "F"))])  # no DS yet
    db = FakeDb()
    service = worker_factory(ValidationService, db=db, replica=SimpleNamespace(current=lambda: behind, invalidate=lambda: None))
    with pytest.raises(Transient, match="DS"):
        service.validate_return([received(3, 4)])
    assert db.tx.emitted == [] and db.tx.executed == []


def test_submission_status_never_goes_backwards():
    db = FakeDb()
    service = worker_factory(SubmissionService, db=db)
    event = Event("e2", "return_validated", "validation", 1, dt.datetime.now(dt.timezone.utc), "r1",
                  {"return_id": "r1", "violations": []})
    service.on_return_validated([event])
    forward = str(db.tx.executed[0])
    assert "status = :status" in forward and "WHERE r.id = x.id AND r.status_rank < :rank" in forward
    # the return a later status reached first still gets the violations, not the status
    behind = str(db.tx.executed[1])
    assert "SET violations = x.violations, validated_at = x.validated_at FROM" in behind


def request(headers=None, args=None):
    return SimpleNamespace(headers=headers or {}, args=args or {}, content_length=None)


def test_gateway_refuses_a_request_without_a_token():
    service = worker_factory(GatewayService)
    service.auth.principal.side_effect = HttpError(401, "missing bearer token")
    with pytest.raises(HttpError) as err:
        service.get_submission(request(), "r1")
    assert err.value.status == 401
    service.submission.get.call_async.assert_not_called()


def test_notify_tells_a_unit_rejected_for_another_units_problems_which_they_were(monkeypatch):
    from services.notify import alerts
    from services.notify.service import NotifyService

    recorded = {}
    monkeypatch.setattr(alerts, "supervisors", lambda md, ou, pe: [f"sup-{ou}"])
    monkeypatch.setattr(alerts, "record", lambda conn, kind, recipients, ou, ds, pe, details, webhook:
                        recorded.setdefault((ou, pe), details) and [1])
    service = worker_factory(NotifyService)
    medium = {"rule": "M", "importance": "MEDIUM", "org_unit": "V1", "period": "202610"}
    high = {"rule": "H", "importance": "HIGH", "org_unit": "V2", "period": "202610"}
    low = {"rule": "L", "importance": "LOW", "org_unit": "V2", "period": "202610"}
    event = Event("e9", "return_rejected", "validation", 1, dt.datetime.now(dt.timezone.utc), "r9",
                  {"return_id": "r9", "data_set": "DS", "org_unit": "V1", "period": "202610"})
    service._invalid_return(FakeTx(), event, "REJECTED", [medium, high, low])
    # V1's supervisors read the MEDIUM of their own and the HIGH that rejected the return at V2
    assert recorded[("V1", "202610")]["violations"] == [medium]
    assert recorded[("V1", "202610")]["rejected_for"] == [high]
    # V2's own HIGH is reason enough: nothing from elsewhere
    assert "rejected_for" not in recorded[("V2", "202610")]
