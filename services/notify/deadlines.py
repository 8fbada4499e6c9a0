"""The deadline check: LATE_RETURN, REMINDER and daily digests, set-based.

Notify decides deadlines from its own tables, and asks one question:

* ``received``: the first accepted return of each (data set, unit, period),
  recorded from ``return_validated`` in the handler's transaction;
* the metadata replica: which units are assigned each data set and open, and
  where they sit in the hierarchy as of each period (paths over time);
* the submission service (RPC ``received_in_time``), about the places found
  missing: which have a return received in time and not rejected, still on its
  way through validation. Those are held, not alerted (see ``check``); if the
  submission service can't answer, the check fails and runs again next time.

For a day ``as_of`` (in Asia/Vientiane), the candidate periods of every data set
are those whose on-time window (end + ``timelyDays``) has passed within the
look-back (LATE_RETURN), or whose due date (the period's end) is at most
``reminder_days`` ahead (REMINDER). One SQL statement finds every assigned,
open unit without an accepted return for them (less the held places), joins the recipients
(supervisors at the unit and its ancestors as of the period; the unit's own
reporters for a reminder) and inserts the notifications with ON CONFLICT DO
NOTHING on their unique key: running the check again, on the timer and by
hand, from two notify instances, adds nothing. No loop over units.

A supervisor whose focal point says ``digest: true`` gets no e-mail per late unit;
instead one LATE_DIGEST per day listing every open late return of their subtree (key:
recipient, their unit, ``*``, the day). Their LATE_RETURN alerts are still recorded,
one per unit as for everyone (CONTRACT 7: every supervisor up the tree is a recipient,
and ``GET /api/notifications`` lists them), but never sent on their own (no attempt is
ever due: ``next_attempt_at`` is infinity): the dispatcher marks them SENT, or FAILED,
with the digest that lists them (``dispatcher.DIGESTED``). One recorded after the day's
digest was made, by a later check, is listed in the next digest the reader gets (one is
made for it, even if nothing else is late by then).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from shared.periods import Period
from shared.replica import Metadata, assigned_sql

LATE, REMINDER, DIGEST = "LATE_RETURN", "REMINDER", "LATE_DIGEST"
ALL_DATA_SETS = "*"


@dataclass(frozen=True)
class Candidate:
    kind: str
    data_set: str
    period: Period
    due_date: dt.date      # the period's end
    deadline: dt.date      # the last day that counts as on time


def candidates(md: Metadata, as_of: dt.date, lookback_days: int, reminder_days: int,
               start: dt.date | None = None) -> list[Candidate]:
    """The (data set, period) pairs a check on ``as_of`` looks at: a few per data set. A
    period is late from the day after its deadline for ``lookback_days``, counted from that
    deadline (counted from the period's end, a data set whose timelyDays reached the
    look-back was never late, and one near it late on a day or two only: a timer down that
    day lost the alert). With a
    reporting ``start`` (go-live), the first period chased is the one under way that day:
    those that ended before it went on paper."""
    out = []
    for ds in md.data_sets.values():
        p = Period.containing(ds.period_type, as_of - dt.timedelta(days=lookback_days + ds.timely_days))
        if start is not None and p.end < start:
            p = Period.containing(ds.period_type, start)
        while p.end <= as_of + dt.timedelta(days=reminder_days):
            deadline = p.end + dt.timedelta(days=ds.timely_days)
            if as_of - dt.timedelta(days=lookback_days) <= deadline < as_of:
                out.append(Candidate(LATE, ds.code, p, p.end, deadline))
            elif as_of <= p.end <= as_of + dt.timedelta(days=reminder_days):
                out.append(Candidate(REMINDER, ds.code, p, p.end, deadline))
            p = p.next()
    return out


# every assigned, open unit without an accepted return for a candidate, less those the
# submission service says have a return received in time that is not rejected (``held``)
_MISSING = """
WITH cand AS (
    SELECT * FROM unnest(CAST(:kind AS text[]), CAST(:ds AS text[]), CAST(:period AS text[]),
                         CAST(:start AS date[]), CAST(:end AS date[]), CAST(:deadline AS date[]))
           AS c(kind, data_set, period, start_date, end_date, deadline)
),
expected AS (
    -- assigned (explicitly or by level as of the period) and open during it
    SELECT c.*, p.code AS org_unit, p.path, u.name AS unit_en, coalesce(u.name_lo, u.name) AS unit_lo,
           d.name AS ds_en, coalesce(d.name_lo, d.name) AS ds_lo
    FROM cand c
    JOIN notify.md_data_set d ON d.code = c.data_set
    JOIN notify.md_org_unit u
      ON u.opening_date <= c.end_date AND (u.closed_date IS NULL OR u.closed_date >= c.start_date)
    -- where the unit sat when the period began for it (at its opening, if that came later),
    -- as completeness reads it
    JOIN notify.md_org_unit_path p
      ON p.code = u.code AND p.valid_from <= greatest(c.start_date, u.opening_date)
     AND (p.valid_to IS NULL OR p.valid_to > greatest(c.start_date, u.opening_date))
    -- (a unit taken out of the list is chased no more, for no period: where it reported it
    -- is not missing, and where it did not, nobody expects it now)
    WHERE """ + assigned_sql("p.code", "p.level", "d.org_units", "d.org_unit_level") + """
),
missing AS (
    -- of those, nothing accepted
    SELECT * FROM expected e
    WHERE NOT EXISTS (SELECT 1 FROM notify.received r
                      WHERE r.data_set = e.data_set AND r.org_unit = e.org_unit AND r.period = e.period)
      AND NOT EXISTS (SELECT 1 FROM unnest(CAST(:held_ds AS text[]), CAST(:held_ou AS text[]),
                                           CAST(:held_pe AS text[])) AS h(data_set, org_unit, period)
                      WHERE h.data_set = e.data_set AND h.org_unit = e.org_unit AND h.period = e.period)
)"""

_FIND = sa.text(_MISSING + """
SELECT kind, data_set, org_unit, period, deadline FROM missing
""")

_CHECK = sa.text(_MISSING + """,
recipients AS (
    SELECT m.*, f.code AS recipient, f.name AS recipient_name, f.language, f.email, f.digest
    FROM missing m
    JOIN notify.md_focal_point f
      ON f.retired_on IS NULL
     AND ((m.kind = 'LATE_RETURN' AND f.role = 'supervisor' AND strpos(m.path, '/' || f.org_unit || '/') > 0)
          OR (m.kind = 'REMINDER' AND f.role = 'reporter' AND f.org_unit = m.org_unit))
),
channels AS (SELECT unnest(CAST(:channels AS text[])) AS channel),
-- one alert per unit and recipient; a digest reader's is recorded all the same, never due
-- on its own (next_attempt_at infinity): it goes out inside the digest below
single AS (
    INSERT INTO notify.notification (type, recipient, org_unit, data_set, period, channel, status,
                                     next_attempt_at, details)
    SELECT r.kind, r.recipient, r.org_unit, r.data_set, r.period, ch.channel, 'PENDING',
           CASE WHEN by_digest THEN timestamptz 'infinity' ELSE now() END,
           jsonb_build_object(
               'names', jsonb_build_object('data_set', jsonb_build_object('en', r.ds_en, 'lo', r.ds_lo),
                                           'org_unit', jsonb_build_object('en', r.unit_en, 'lo', r.unit_lo)),
               'recipient_name', r.recipient_name, 'language', r.language, 'email', r.email,
               'due_date', r.end_date, 'deadline', r.deadline, 'as_of', CAST(:as_of AS date))
           || CASE WHEN by_digest THEN jsonb_build_object('delivered_by', 'LATE_DIGEST') ELSE '{}' END
    FROM recipients r CROSS JOIN channels ch
    CROSS JOIN LATERAL (SELECT r.kind = 'LATE_RETURN' AND r.digest AS by_digest) d
    -- (a recipient without an e-mail address gets its e-mail row all the same: the
    -- dispatcher marks it FAILED, so the gap shows in the list and the metrics instead of
    -- the alert never existing)
    ON CONFLICT ON CONSTRAINT notification_once DO NOTHING
    RETURNING id
),
-- a digest reader's alerts no digest carried yet, each with whether its unit has reported since
waiting AS MATERIALIZED (
    SELECT n.id, n.recipient, n.channel, n.data_set, n.period, n.org_unit, n.details,
           EXISTS (SELECT 1 FROM notify.received r
                   WHERE r.data_set = n.data_set AND r.org_unit = n.org_unit AND r.period = n.period) AS answered
    FROM notify.notification n
    WHERE n.status = 'PENDING' AND n.next_attempt_at = timestamptz 'infinity'
      AND n.type = 'LATE_RETURN' AND n.details->>'delivered_by' = 'LATE_DIGEST'
      AND n.channel = ANY(CAST(:channels AS text[]))
),
-- a digest's lines: every open late return of the reader's subtree found now, and every
-- alert of theirs that no digest carried yet (recorded by a check after that day's digest
-- was made; or the reader has since stopped taking digests: a last one carries them). The
-- dispatcher marks SENT exactly the alerts a digest lists (an alert recorded after it was
-- made had been marked SENT by the next day's, which did not list it, or waited for ever)
digest_lines AS (
    SELECT DISTINCT ON (recipient, channel, data_set, period, org_unit) *
    FROM (SELECT 0 AS fresh_first, r.recipient, ch.channel, r.data_set, r.period, r.org_unit, r.deadline,
                 r.ds_en, r.ds_lo, r.unit_en, r.unit_lo
          FROM recipients r CROSS JOIN channels ch
          WHERE r.kind = 'LATE_RETURN' AND r.digest
          UNION ALL
          SELECT 1, n.recipient, n.channel, n.data_set, n.period, n.org_unit, CAST(n.details->>'deadline' AS date),
                 n.details #>> '{names,data_set,en}', n.details #>> '{names,data_set,lo}',
                 n.details #>> '{names,org_unit,en}', n.details #>> '{names,org_unit,lo}'
          FROM waiting n WHERE NOT n.answered) l                  -- (the answered: see withdrawn)
    ORDER BY recipient, channel, data_set, period, org_unit, fresh_first
),
-- a digest reader's alert whose return has been accepted since it was recorded is no longer
-- late: withdrawn, never sent (the next day's digest listed the unit as late, its count
-- above the check's own). (A data-modifying CTE runs whether or not it is read.)
withdrawn AS (
    -- (one the dispatcher holds, withdrawing a digest's answered lines as it sends it, is
    -- skipped: waiting on it while holding another it will mark deadlocked; the next check)
    DELETE FROM notify.notification n WHERE n.id IN (
        SELECT a.id FROM notify.notification a WHERE a.id IN (SELECT id FROM waiting WHERE answered)
        FOR UPDATE SKIP LOCKED)
    RETURNING id
),
digest AS (
    INSERT INTO notify.notification (type, recipient, org_unit, data_set, period, channel, status, details)
    SELECT 'LATE_DIGEST', l.recipient, f.org_unit, '*', CAST(:as_of AS text), l.channel, 'PENDING',
           jsonb_build_object(
               'recipient_name', min(f.name), 'language', min(f.language), 'email', min(f.email),
               'count', count(*), 'as_of', CAST(:as_of AS date),
               'names', jsonb_build_object(
                   'data_set', jsonb_build_object('en', 'all data sets', 'lo', 'ທຸກຊຸດຂໍ້ມູນ'),
                   'org_unit', jsonb_build_object('en', min(fu.name), 'lo', min(coalesce(fu.name_lo, fu.name)))),
               'late', jsonb_agg(jsonb_build_object(
                   'data_set', l.data_set, 'period', l.period, 'org_unit', l.org_unit, 'deadline', l.deadline,
                   'names', jsonb_build_object(
                       'data_set', jsonb_build_object('en', l.ds_en, 'lo', l.ds_lo),
                       'org_unit', jsonb_build_object('en', l.unit_en, 'lo', l.unit_lo)))
                   ORDER BY l.data_set, l.period, l.org_unit))
    FROM digest_lines l
    JOIN notify.md_focal_point f ON f.code = l.recipient AND f.retired_on IS NULL
    JOIN notify.md_org_unit fu ON fu.code = f.org_unit
    GROUP BY l.recipient, f.org_unit, l.channel
    ON CONFLICT ON CONSTRAINT notification_once DO NOTHING
    RETURNING id
)
SELECT kind, data_set, count(*) AS units, CAST(NULL AS bigint) AS new FROM missing GROUP BY kind, data_set
UNION ALL
-- the returns that fell due over the look-back: the late ones' denominator
SELECT 'EXPECTED', data_set, count(*), NULL FROM expected WHERE kind = 'LATE_RETURN' GROUP BY data_set
UNION ALL
SELECT 'NEW', NULL, NULL, (SELECT count(*) FROM single) + (SELECT count(*) FROM digest)
""")


# Alerts still waiting to go out about periods that ended before go-live: they went on
# paper. The candidates start at go-live, but the alerts a check recorded before the
# operator set STATNET_REPORTING_START (a first deploy checks an hour after it starts, or
# when asked) went out after it, hundreds of e-mails about months nobody reported in
# statnet, and the digest counted them. Withdrawn (deleted, as a digest reader's answered
# alert is); the sent ones stay, as what was sent. A pending digest keeps the lines of its
# other periods, its count says so, and one left with none is withdrawn too.
#
# Nothing the dispatcher holds is waited for (SKIP LOCKED): it holds a row while it sends
# it, and a digest while it sends it and then marks the alerts it carries, so waiting on
# either in the other order deadlocked (a reviewer's experiment). Skipped: an alert or
# digest on its way now, and the alerts a digest on its way carries; whatever is left
# pending is withdrawn by the next check.
_PERIOD_END = """CASE WHEN {p} ~ '^[0-9]{{4}}$' THEN make_date(CAST(left({p}, 4) AS int), 12, 31)
     ELSE CAST(make_date(CAST(left({p}, 4) AS int),
                         CASE WHEN {p} ~ 'Q' THEN 3 * CAST(right({p}, 1) AS int) ELSE CAST(right({p}, 2) AS int) END,
                         1) + interval '1 month' - interval '1 day' AS date) END"""

_BEFORE_START = sa.text("""
WITH digests AS MATERIALIZED (
    SELECT id, recipient, channel, details FROM notify.notification
    WHERE type = 'LATE_DIGEST' AND status = 'PENDING'
    FOR UPDATE SKIP LOCKED
),
on_its_way AS (
    SELECT recipient, channel FROM notify.notification
    WHERE type = 'LATE_DIGEST' AND status = 'PENDING' AND id NOT IN (SELECT id FROM digests)
),
gone AS (
    DELETE FROM notify.notification n
    WHERE n.status = 'PENDING' AND n.id IN (
        SELECT a.id FROM notify.notification a
        WHERE a.status = 'PENDING' AND a.type IN ('LATE_RETURN', 'REMINDER')
          AND CAST(a.details->>'due_date' AS date) < :start
          AND NOT (a.details->>'delivered_by' = 'LATE_DIGEST' AND EXISTS (
                   SELECT 1 FROM on_its_way w WHERE w.recipient = a.recipient AND w.channel = a.channel))
        FOR UPDATE SKIP LOCKED)
    RETURNING n.id
),
lines AS (
    SELECT d.id, l.line, l.ord, """ + _PERIOD_END.format(p="(l.line->>'period')") + """ < :start AS before_start
    FROM digests d
    CROSS JOIN LATERAL jsonb_array_elements(d.details->'late') WITH ORDINALITY AS l(line, ord)
),
kept AS (
    SELECT id, coalesce(jsonb_agg(line ORDER BY ord) FILTER (WHERE NOT before_start), '[]') AS late,
           count(*) FILTER (WHERE NOT before_start) AS lines
    FROM lines GROUP BY id HAVING bool_or(before_start)
),
emptied AS (
    DELETE FROM notify.notification n USING kept k WHERE n.id = k.id AND k.lines = 0
    RETURNING n.id
),
trimmed AS (
    UPDATE notify.notification n SET details = n.details || jsonb_build_object('late', k.late, 'count', k.lines)
    FROM kept k WHERE n.id = k.id AND k.lines > 0
    RETURNING n.id
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM emptied) AS withdrawn
""")


def withdraw_before(conn: sa.Connection, start: dt.date) -> int:
    """Withdraw the pending alerts (and digest lines) about periods that ended before the
    reporting ``start``; how many alerts were withdrawn. Its own short transaction: the
    check after it holds its own for an RPC and a large statement."""
    return conn.execute(_BEFORE_START, {"start": start}).scalar()


@dataclass
class CheckResult:
    as_of: dt.date
    late: dict[str, int]        # data set -> units late (as of this check)
    due: dict[str, int]         # data set -> units to remind
    notifications: int          # new notifications recorded by this check
    # data set -> unit-periods whose deadline passed over the look-back (late or not)
    expected: dict[str, int] = field(default_factory=dict)
    # pending alerts withdrawn: about periods that ended before the reporting start
    withdrawn: int = 0

    def to_json(self, md: Metadata) -> dict:
        return {"asOf": self.as_of.isoformat(), "late": sum(self.late.values()), "due": sum(self.due.values()),
                "expected": sum(self.expected.values()), "notifications": self.notifications,
                "withdrawn": self.withdrawn,
                "dataSets": [{"dataSet": code, "late": self.late.get(code, 0), "due": self.due.get(code, 0),
                              "expected": self.expected.get(code, 0)}
                             for code in sorted(md.data_sets)]}


# of [data set, org unit, period, last day] places, the indexes of those with a return
# received by the last day and not rejected (the submission service's ``received_in_time``)
ReceivedInTime = Callable[[list[list]], list[int]]


def check(conn: sa.Connection, md: Metadata, as_of: dt.date, lookback_days: int, reminder_days: int,
          channels: list[str], received_in_time: ReceivedInTime, start: dt.date | None = None) -> CheckResult:
    """Record the check's alerts. A place without an accepted return is asked about first:
    notify hears of a return only once validation has accepted it, so a return sent in time
    and still queued for validation (a rush on the last day, validation down or behind at
    midnight) would look late, and a late alert, once sent, can't be taken back. Such
    places are held, and checked again next time (by then judged: accepted, or rejected and
    late). A reminder is held by any return not rejected."""
    found = candidates(md, as_of, lookback_days, reminder_days, start)
    late: dict[str, int] = {}
    due: dict[str, int] = {}
    expected: dict[str, int] = {}
    if not found:
        return CheckResult(as_of, late, due, 0, expected)
    params = {"kind": [c.kind for c in found], "ds": [c.data_set for c in found],
              "period": [c.period.code for c in found], "start": [c.period.start for c in found],
              "end": [c.period.end for c in found], "deadline": [c.deadline for c in found],
              "held_ds": [], "held_ou": [], "held_pe": []}
    missing = conn.execute(_FIND, params).all()
    asked = [[m.data_set, m.org_unit, m.period, (m.deadline if m.kind == LATE else dt.date.max).isoformat()]
             for m in missing]
    held = [asked[i] for i in received_in_time(asked)] if asked else []
    params.update(held_ds=[h[0] for h in held], held_ou=[h[1] for h in held], held_pe=[h[2] for h in held])
    rows = conn.execute(_CHECK, {**params, "channels": channels, "as_of": as_of}).all()
    new = 0
    for r in rows:
        if r.kind == "NEW":
            new = int(r.new)
        else:
            {LATE: late, REMINDER: due, "EXPECTED": expected}[r.kind][r.data_set] = int(r.units)
    return CheckResult(as_of, late, due, new, expected)
