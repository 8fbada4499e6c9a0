"""Notify service.

Event flow::

    validation.return_rejected                   -> INVALID_RETURN to supervisors of the unit and its ancestors
    validation.return_validated (MEDIUM warnings) -> INVALID_RETURN likewise
                                (every accepted)  -> received (what the deadline check compares with)
    timer | POST /api/deadlines/check?asOf=       -> LATE_RETURN, REMINDER, LATE_DIGEST (deadlines.py)
    [notification rows] -> Dispatcher -> SMTP / webhook, retried with backoff
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from eventlet import Timeout
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from nameko.extensions import DependencyProvider
from nameko.timer import Timer

from services.notify import alerts, deadlines
from services.notify import tables as t
from services.notify.dispatcher import CHANNELS, Dispatcher, on_focal_points_changed, retry_failed
from services.notify.templates import SUBJECTS
from shared import collectors, local, metrics, serialization
from shared.api import api_rpc, error, flag, not_found, reply
from shared.config import Settings
from shared.db import engine_for
from shared.delivery import Database
from shared.events import subscribe
from shared.local import RpcProxy
from shared.periods import Period, PeriodError, parse_day, show, today
from shared.replica import KeepsMetadataReplica, Replica
from shared.returns import reported_places

log = logging.getLogger(__name__)


class Outgoing(DependencyProvider):
    """``self.outgoing``: wakes the dispatchers after new notifications are committed."""

    email = Dispatcher("email")
    email_second_lane = Dispatcher("email", lane=1)
    webhook_sender = Dispatcher("webhook")
    webhook_second_lane = Dispatcher("webhook", lane=1)

    def wake(self) -> None:
        for dispatcher in (self.email, self.email_second_lane, self.webhook_sender, self.webhook_second_lane):
            dispatcher.wake()

    def setup(self):
        self.settings = Settings.of(self.container)
        self.webhook = bool(self.settings.alert_webhook)
        # the channels alerts go out by: e-mail always, the webhook when one is set
        self.channels = ["email"] + (["webhook"] if self.webhook else [])
        # every series of a channel in use exists from the start, at 0: the first failure
        # of a kind is then an increase() an alert rule can see
        for channel in self.channels:
            for kind in SUBJECTS:
                for status in ("SENT", "FAILED", "RETRY", "WITHDRAWN"):
                    metrics.notifications_total.labels(type=kind, channel=channel, status=status)

    def get_dependency(self, worker_ctx):
        return self


class DeadlineTimer(Timer):
    """nameko's timer, its interval from settings (``STATNET_DEADLINE_CHECK_SECONDS``), its
    first tick due an interval after the last check recorded (by any instance, on a timer or
    by hand), at once if that is past: counted from each start, a notify restarted more often
    than the interval (deploys, a crash loop, a laptop) never ran the check at all."""

    def __init__(self, **kwargs):
        super().__init__(interval=3600, eager=False, **kwargs)

    def setup(self):
        settings = Settings.of(self.container)
        self.interval = settings.deadline_check_seconds
        self.database_url = settings.database_url
        self.reporting_start = settings.reporting_start_date
        self.enabled = settings.deadline_timer

    def first_wait(self) -> float:
        """At once, too, when the reporting start is not the one the last check judged by: the
        operator has just set go-live, and the gauge still counts the months before it."""
        lc = t.late_count
        try:
            with engine_for(self.database_url).connect() as conn:
                since, start_changed = conn.execute(sa.select(
                    sa.func.extract("epoch", sa.func.now() - sa.func.max(lc.c.checked_at)),
                    sa.func.bool_or(lc.c.reporting_start.is_distinct_from(self.reporting_start)))).one()
        except sa.exc.SQLAlchemyError:  # (no schema yet: a first start)
            since, start_changed = None, False
        if start_changed:
            return 0.0
        return self.interval if since is None else min(max(self.interval - float(since), 0.0), self.interval)

    def _run(self):
        """nameko's loop, but for the first wait: each tick an interval after the one before
        (or after the worker, if that took longer), until the container stops."""
        if not self.enabled:  # (statnet demo, which runs its one check by hand)
            self.should_stop.wait()
            return
        wait = self.first_wait()
        while True:
            with Timeout(wait, exception=False):
                self.should_stop.wait()
                break
            began = time.monotonic()
            self.handle_timer_tick()
            self.worker_complete.wait()
            self.worker_complete.reset()
            wait = max(self.interval - (time.monotonic() - began), 0)


def pending_families(container):
    """Alerts waiting to go out, by type and channel: growing means SMTP or the webhook is down.
    Not a digest reader's alerts, which go out inside their digest (never due on their own):
    counted too, a province digest of 261 late units read as 262 e-mails waiting."""
    db = collectors.provider(container, Database)
    n = t.notification
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(n.c.type, n.c.channel, sa.func.count())
                            .where(n.c.status == "PENDING", n.c.next_attempt_at < sa.literal_column(
                                "timestamptz 'infinity'")).group_by(n.c.type, n.c.channel)).all()
    # every type of a channel in use, at 0 when nothing waits: a rule on the series sees it
    # empty, not absent (absent is also what a notify that is down looks like)
    channels = collectors.provider(container, Outgoing).channels
    pending = {(kind, channel): 0 for kind in SUBJECTS for channel in channels}
    pending.update({(kind, channel): count for kind, channel, count in rows})
    yield collectors.gauge("statnet_notifications_pending", "Alerts not yet delivered (retrying included)",
                           ["type", "channel"], [(k, c, v) for (k, c), v in sorted(pending.items())])


# accepted returns: the deadline check stops chasing their unit and period
_RECEIVED = sa.text(f"""
INSERT INTO {t.received.fullname} (data_set, org_unit, period, return_id, received_at)
SELECT data_set, org_unit, period, return_id, received_at
FROM json_to_recordset(CAST(:rows AS json))
    AS x(data_set text, org_unit text, period text, return_id text, received_at timestamptz)
ON CONFLICT DO NOTHING
""")


def late_families(container):
    """statnet_late_returns: what the latest deadline check found, from the table it wrote
    (a restart, or another instance, says the same until the next check)."""
    db = collectors.provider(container, Database)
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(t.late_count.c.data_set, t.late_count.c.late, t.late_count.c.expected)).all()
    yield collectors.gauge("statnet_late_returns", "Returns (unit-periods) of assigned, open units not accepted "
                           "by due date + timelyDays, over the look-back of the last deadline check",
                           ["dataset"], [(ds, late) for ds, late, _ in rows])
    # the denominator: an absolute threshold on the late count fired for good from go-live,
    # and for a large province's few units that never report
    yield collectors.gauge("statnet_expected_returns", "Returns (unit-periods) expected from assigned, open units "
                           "whose due date + timelyDays passed, over the look-back of the last deadline check",
                           ["dataset"], [(ds, expected) for ds, _, expected in rows])


STATUSES = ("PENDING", "SENT", "FAILED")
MAX_PAGE = 10_000  # notifications a page (the default): ~2.5 MB of JSON through the gateway's RPC
# what GET /api/notifications takes
# (and DHIS2 clients' habitual paging=true|false: a list is a page of at most MAX_PAGE either way)
_LIST_PARAMETERS = ("recipient", "type", "orgUnit", "dataSet", "period", "status", "channel", "page", "pageSize",
                    "paging")


def _unknown_parameters(params: dict, known: tuple[str, ...]) -> list[str]:
    """A problem naming each parameter not in ``known``: a filter misspelt chose nothing,
    and the request went on over every alert."""
    return [f"unknown parameter {name!r} (known: {', '.join(known)})" for name in sorted(set(params) - set(known))]


def _refuse_unknown_parameters(params: dict, known: tuple[str, ...]) -> None:
    """A 400 naming every parameter not in ``known``, if any."""
    unknown = _unknown_parameters(params, known)
    if unknown:
        raise error(400, "; ".join(unknown))


def _unknown_type(value: str) -> str:
    return f"type: unknown notification type {value!r} (one of {', '.join(sorted(SUBJECTS))})"


def _page(params: dict, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and 1 <= int(raw) <= 10 ** 9):
        raise error(400, f"{name}: {raw!r} is not a whole number from 1 to 1000000000")
    return int(raw)


class NotifyService(KeepsMetadataReplica):
    name = "notify"
    pending = collectors.Source(pending_families)
    late = collectors.Source(late_families)

    db = Database(t.metadata)
    # a focal point given an address: its e-mail alerts that failed for want of one go out
    replica = Replica(t.replica, on_apply=on_focal_points_changed)
    outgoing = Outgoing()
    # the deadline check asks which places it found missing have a return on its way
    submission_rpc = RpcProxy("submission")

    def _invalid_return(self, tx, event, outcome: str, violations: list[dict]) -> int:
        """INVALID_RETURN about each place the violations are at, to that unit's supervisors
        (a district's return carrying a village's bad month tells that village's chain, about
        that village and month, not the header's); how many alerts are new."""
        data = event.data
        md = self.replica.current(tx.conn)  # (a second connection, held with this one, could wait for ever)
        by_place: dict[tuple[str, str], list[dict]] = {}
        for v in violations:
            place = (v.get("org_unit") or data["org_unit"], v.get("period") or data["period"])
            by_place.setdefault(place, []).append(v)
        new = 0
        for (org_unit, period), found in sorted(by_place.items()):
            if all(v["importance"] == "LOW" for v in found):
                continue  # warnings alone alert nobody, here as in a return of one place
            recipients = alerts.supervisors(md, org_unit, period)
            details = {"outcome": outcome, "return_id": data["return_id"], "violations": found,
                       "names": alerts.names(md, data["data_set"], org_unit)}
            if outcome == "REJECTED" and not any(v["importance"] == "HIGH" for v in found):
                # rejected for another unit's problems in the same return: said, or this unit's
                # supervisors read "rejected" over a list of warnings and can't tell why
                details["rejected_for"] = [{**v, "org_unit": ou, "period": pe}
                                           for (ou, pe), vs in sorted(by_place.items()) if (ou, pe) != (org_unit, period)
                                           for v in vs if v["importance"] == "HIGH"]
            made = alerts.record(tx.conn, "INVALID_RETURN", recipients, org_unit, data["data_set"],
                                 period, details, self.outgoing.webhook)
            log.info("INVALID_RETURN for return %s at %s %s: %d new notification(s) to %d supervisor(s)",
                     data["return_id"], org_unit, period, len(made), len(recipients))
            new += len(made)
        return new

    @subscribe("validation", "return_rejected")
    def on_return_rejected(self, event):
        with self.db.consume(event) as tx:
            new = 0 if tx.duplicate else self._invalid_return(tx, event, "REJECTED", event.data["violations"])
        if new:
            self.outgoing.wake()

    @subscribe("validation", "return_validated", batch=50)
    def on_return_validated(self, events):
        """An accepted return is received (deadlines stop chasing it); one with MEDIUM
        violations also alerts the supervisors."""
        new = 0
        with self.db.consume_many(events) as tx:
            for event in tx.fresh:
                medium = [v for v in event.data["violations"] if v["importance"] == "MEDIUM"]
                if medium:
                    new += self._invalid_return(tx, event, "ACCEPTED_WITH_WARNINGS", medium)
            self._received(tx, [e.data for e in tx.fresh])
        if new:
            self.outgoing.wake()

    @subscribe("aggregation", "history_loaded")
    def on_history_loaded(self, event):
        """Past values loaded in bulk: their places are reported, as completeness counts them."""
        with self.db.consume(event) as tx:
            if not tx.duplicate:
                data = event.data
                tx.execute(_RECEIVED, {"rows": serialization.dumps([
                    {"data_set": data["data_set"], "org_unit": p["org_unit"], "period": p["period"],
                     "return_id": data["batch"], "received_at": data["loaded_at"]} for p in data["places"]])})

    def _received(self, tx, returns: list[dict]) -> None:
        if returns:
            tx.execute(_RECEIVED, {"rows": serialization.dumps([
                {"data_set": data["data_set"], "org_unit": org_unit, "period": period,
                 "return_id": data["return_id"], "received_at": data["received_at"]}
                for data in returns for org_unit, period in reported_places(data)])})

    # ---------------------------------------------------------------- deadlines

    @DeadlineTimer.decorator()
    def check_deadlines_on_timer(self):
        try:
            self._check_deadlines(today())
        except local.Unavailable as exc:
            # nothing recorded: the next tick checks again (a place can't be called late
            # while nobody can say whether its return is waiting for validation)
            log.warning("deadline check put off: %s", exc)

    @api_rpc
    def check_deadlines(self, principal, as_of: str | None = None, params: dict | None = None):
        """``POST /api/deadlines/check?asOf=YYYY-MM-DD[&dryRun=true]`` (admin, operator).

        A dry run answers what the check would find and record, and records nothing: a
        check as of a day still to come sends its alerts now, and once sent an alert is
        never sent again (an operator trying out next month's deadline had warned every
        supervisor early, and silenced the real alert)."""
        principal.require("deadlines.check")
        params = params or {}  # (a gateway of the release before passes asOf alone)
        _refuse_unknown_parameters(params, ("asOf", "dryRun"))  # (?asof= ran today's whole check)
        dry_run = bool(flag(params, "dryRun"))
        try:
            # absent is today; given empty is a mistake like any other (it ran today's whole check)
            day = parse_day("asOf", as_of) if as_of is not None else today()
        except PeriodError as exc:
            raise error(400, str(exc)) from None
        try:
            return reply(self._check_deadlines(day, share=0.5, dry_run=dry_run))
        except local.Unavailable as exc:
            raise error(503, f"cannot tell which returns are on their way through validation: {exc}") from None

    def _check_deadlines(self, day: dt.date, share: float = 1.0, dry_run: bool = False) -> dict:
        settings = self.outgoing.settings
        md = self.replica.current()

        def received_in_time(places: list[list]) -> list[int]:
            return local.ask(self.submission_rpc, "submission", "received_in_time", places, share=share)

        def check(conn: sa.Connection) -> deadlines.CheckResult:
            return deadlines.check(conn, md, day, settings.late_lookback_days, settings.reminder_days,
                                   self.outgoing.channels, received_in_time, settings.reporting_start_date)

        if dry_run:
            # the very statement of a check, in a transaction rolled back: what it would
            # record is counted by what it did record, never a second reading of the rules
            with self.db.connect() as conn, conn.begin() as tx:
                result = check(conn)
                tx.rollback()
            log.info("deadline check as of %s, dry run: %d late, %d due, %d notification(s) not recorded", day,
                     sum(result.late.values()), sum(result.due.values()), result.notifications)
            return {**result.to_json(md), "dryRun": True}
        withdrawn = 0
        if settings.reporting_start_date is not None:
            with self.db.transaction() as tx:
                withdrawn = deadlines.withdraw_before(tx.conn, settings.reporting_start_date)
        with self.db.transaction() as tx:
            result = check(tx.conn)
            result.withdrawn = withdrawn
            # what the latest check found, per data set (0 when none late): the gauge's source
            # (an upsert: two checks at once, from two instances, must not collide)
            tx.conn.execute(t.late_count.delete().where(t.late_count.c.data_set.not_in(sorted(md.data_sets))))
            if md.data_sets:
                late = insert(t.late_count).values([{"data_set": code, "late": result.late.get(code, 0),
                                                     "expected": result.expected.get(code, 0), "as_of": day,
                                                     "reporting_start": settings.reporting_start_date}
                                                    for code in sorted(md.data_sets)])
                tx.conn.execute(late.on_conflict_do_update(
                    index_elements=[t.late_count.c.data_set],
                    set_={"late": late.excluded.late, "expected": late.excluded.expected,
                          "as_of": late.excluded.as_of, "reporting_start": late.excluded.reporting_start,
                          "checked_at": sa.func.now()}))
        if result.notifications:
            self.outgoing.wake()
        if result.withdrawn:
            log.warning("withdrew %d alert(s) not yet sent about periods that ended before the reporting "
                        "start (%s): they went on paper", result.withdrawn, settings.reporting_start_date)
        log.info("deadline check as of %s: %d late, %d due, %d new notification(s)", day,
                 sum(result.late.values()), sum(result.due.values()), result.notifications)
        return result.to_json(md)

    @api_rpc
    def retry_notifications(self, principal, params: dict):
        """``POST /api/notifications/retry`` (admin, operator; ``recipient``, ``type``,
        ``channel`` to choose): FAILED is final for the dispatcher (three days of retries,
        or a refusal for good), not for the alert: once the cause is mended (a relay back
        after a long holiday, a mailbox created), the operator sends them again."""
        principal.require("notifications.retry")
        md = self.replica.current()
        # a filter misspelt (?typ=, ?id=) retried every failed alert of every kind
        problems = _unknown_parameters(params, ("channel", "recipient", "type"))
        if params.get("recipient") and params["recipient"] not in md.focal_points:
            raise not_found(f"focal point {params['recipient']!r}")
        if params.get("type") and params["type"] not in SUBJECTS:
            problems.append(_unknown_type(params["type"]))
        if params.get("channel") and params["channel"] not in CHANNELS:
            problems.append(f"channel: unknown channel {params['channel']!r} (one of {', '.join(sorted(CHANNELS))})")
        if problems:
            raise error(400, "; ".join(problems))
        with self.db.transaction() as tx:
            retried = retry_failed(tx.conn, params.get("recipient") or None, params.get("type") or None,
                                   params.get("channel") or None)
        if retried:
            self.outgoing.wake()
        log.info("%d failed notification(s) sent again by %s", retried, principal.username)
        return reply({"retried": retried})

    @staticmethod
    def _about_in_scope(principal, md, org_unit: str, period: str) -> bool:
        try:
            Period.parse(period)
        except PeriodError:  # (a digest names no one period: by where its unit is)
            return principal.covers_path(md.current_path(org_unit))
        return md.place_in(org_unit, period, principal.org_unit)

    @api_rpc
    def list_notifications(self, principal, params: dict):
        """``GET /api/notifications``, oldest first, a page at a time (DHIS2's ``page`` and
        ``pageSize``, at most ``MAX_PAGE``) with a ``pager`` saying how many there are: a
        province's list passes 10,000 after one deadline check, and was cut there without
        a word, its newest alerts out of sight."""
        principal.require("read")
        # a filter misspelt (?typ=, ?dataset=) listed every alert, as if it had matched
        _refuse_unknown_parameters(params, _LIST_PARAMETERS)
        flag(params, "paging")  # (true or false, or a 400 naming it)
        page, page_size = _page(params, "page", 1), _page(params, "pageSize", MAX_PAGE)
        if page_size > MAX_PAGE:
            raise error(400, f"pageSize: {page_size} is more than {MAX_PAGE}")
        md = self.replica.current()
        n = t.notification
        query = sa.select(*[c for c in n.c if c.name != "details"]).order_by(n.c.id)
        if params.get("recipient"):
            # a recipient is a focal point: unknown is 404; one attached outside the
            # caller's subtree (a neighbouring district's, or the province's for a
            # district supervisor) is 403, as for any other unit out of scope
            fp = md.focal_points.get(params["recipient"])
            if fp is None:
                raise not_found(f"focal point {params['recipient']!r}")
            if not principal.unscoped and not md.ever_in(fp.org_unit, principal.org_unit):
                principal.require_path(fp.org_unit, md.current_path(fp.org_unit))
            query = query.where(n.c.recipient == params["recipient"])
        if params.get("type"):
            if params["type"] not in SUBJECTS:  # every type has its templates
                raise error(400, _unknown_type(params["type"]))
            query = query.where(n.c.type == params["type"])
        asked_unit = params.get("orgUnit")
        if asked_unit in md.org_units and not principal.unscoped and not md.ever_in(asked_unit, principal.org_unit):
            # a unit never in the caller's subtree is a 403 naming it, as everywhere else (an
            # empty list read as "no alerts there")
            principal.require_path(asked_unit, md.current_path(asked_unit))
        # (as stored: a digest's data set is "*" and its period the day it is for)
        for name, column in (("orgUnit", n.c.org_unit), ("dataSet", n.c.data_set), ("period", n.c.period)):
            if params.get(name):
                query = query.where(column == params[name])
        # which alerts were given up on, or still wait, over which channel: what an operator
        # mending a relay asks first (the three-day retries' lastError is on each)
        for name, column, known in (("status", n.c.status, STATUSES), ("channel", n.c.channel, tuple(CHANNELS))):
            if params.get(name):
                if params[name] not in known:
                    raise error(400, f"{name}: unknown {name} {params[name]!r} (one of {', '.join(known)})")
                query = query.where(column == params[name])
        if not principal.unscoped:
            # to a focal point in the caller's subtree (as with ?recipient=: the province
            # supervisor's alerts are not a village reporter's), chosen in the query, before
            # its limit, so that a country's alerts leave a district's list whole. Ever in
            # it: a village moved away keeps its reporter's reminders of the months it was
            # the old district's there (by where it is now, neither district saw them),
            # and the alerts themselves are cut to the caller's unit-periods below
            query = query.where(n.c.recipient.in_(sorted(
                code for code, fp in md.focal_points.items() if md.ever_in(fp.org_unit, principal.org_unit))))
        first = (page - 1) * page_size
        with self.db.connect() as conn:
            if principal.unscoped:
                rows = conn.execute(query.add_columns(sa.func.count().over().label("total"))
                                    .offset(first).limit(page_size)).all()
                total = rows[0].total if rows else conn.execute(
                    sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
            else:
                # and about a unit in the subtree for that period, as analytics counts it: a
                # village moved away in June stays its old district's for its earlier months
                # (judged here, so the page is cut after it; a subtree's list, not a country's)
                rows = [r for r in conn.execute(query) if self._about_in_scope(principal, md, r.org_unit, r.period)]
                total, rows = len(rows), rows[first:first + page_size]
        return reply({"pager": {"page": page, "pageSize": page_size, "total": total,
                                "pageCount": max(1, -(-total // page_size))},
                      "notifications": [
            {"id": r.id, "type": r.type, "recipient": r.recipient, "orgUnit": r.org_unit,
             "dataSet": r.data_set, "period": r.period, "createdAt": show(r.created_at),
             "channel": r.channel, "status": r.status, "attempts": r.attempts,
             "sentAt": show(r.sent_at), "lastError": r.last_error} for r in rows]})
