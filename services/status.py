"""``statnet status``: the network's health on one screen, for an operator at a terminal.

It asks the two things that are true even when statnet itself is down: RabbitMQ
(queue depths and consumers, by passive declaration: a service is up when its
queues have consumers) and PostgreSQL (each service's outbox, read-only, and
the completeness of every data set's reporting period from aggregation's own
tables). Exit status 0 when every service is up and nothing is parked or stuck,
1 otherwise, so it can also serve a cron job or a health probe.
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from kombu import Queue

from shared import topology
from shared.config import Settings
from shared.db import engine_for
from shared.periods import show, today

STUCK_SECONDS = 300
# an alert goes out within seconds, or is retried with a growing wait: one still waiting after
# an hour means the relay or the webhook has been failing that long
ALERT_STUCK_SECONDS = 3600

_ALERTS = """
SELECT count(*) FILTER (WHERE waiting),
       coalesce(extract(epoch FROM now() - min(since) FILTER (WHERE waiting)), 0),
       count(*) FILTER (WHERE status = 'FAILED')
FROM notify.notification CROSS JOIN LATERAL
     (SELECT status = 'PENDING' AND next_attempt_at < timestamptz 'infinity' AS waiting,
             -- one sent again (retry, a new address) waits from then, not from its first day
             greatest(created_at, CAST(details->>'requeued_at' AS timestamptz)) AS since) w
"""


def collect(settings: Settings) -> dict:
    """What the broker and the database say; either may be unreachable, and what the other
    says is still reported (``problems`` names the one that is not)."""
    from services.aggregation import completeness
    from services.aggregation import tables as agg
    from services.runner import service_classes
    from shared.replica import _load, replica_version

    classes = service_classes()
    queues = {cls.name: [e.name for e in topology.entities([cls], settings)
                         if isinstance(e, Queue) and e.name.startswith("evt-")] for cls in classes.values()}
    dlqs = {name: topology.dlq_name(name) for name in classes}
    # failed messages waiting out a delay before their next attempt: shared by every
    # service, and otherwise seen nowhere (a message retried every two minutes for an
    # hour and a half before it is parked showed up in no service's queue)
    delays = [topology.delay_queue(ms).name for ms in topology.RETRY_DELAYS_MS]
    problems = []
    try:
        depths = topology.queue_depths(settings, [q for qs in queues.values() for q in qs]
                                       + list(dlqs.values()) + delays)
    except Exception as exc:  # an operator's screen: say what failed, go on
        depths = None
        problems.append(f"the broker cannot be read (AMQP_URI): {type(exc).__name__}: {exc}")
    outboxes, rates, alerts, autovacuum = {}, [], None, None
    try:
        with engine_for(settings.database_url).connect() as conn:
            autovacuum = conn.execute(sa.text("SHOW autovacuum")).scalar() == "on"
            for name in classes:
                if name != "gateway":
                    outboxes[name] = conn.execute(sa.text(
                        f"SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                        f"FROM {name}.outbox")).one()
            # alerts waiting to go out (not those a digest carries: they go with it) and given up on
            alerts = conn.execute(sa.text(_ALERTS)).one()
            md = _load(conn, agg.replica, replica_version(conn, agg.replica))
            rates = completeness.current_rates(conn, md, today(), settings.reporting_start_date)
    except Exception as exc:
        outboxes = None
        where = sa.engine.make_url(settings.database_url)
        problems.append(f"the database at {where.host}:{where.port or 5432} cannot be read (DATABASE_URL): "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    services = {}
    for name in classes:
        consumers = [depths[q][1] for q in queues[name]] if depths is not None else []
        backlog, age = (outboxes or {}).get(name, (None, 0))
        services[name] = {
            # the gateway has no queues of its own but user_changed's shared one (each
            # instance's own is not declared with the topology): same rule
            "up": None if depths is None else bool(consumers) and min(consumers) > 0,
            "queued": None if depths is None else sum(depths[q][0] for q in queues[name]),
            "dead_letters": None if depths is None else depths[dlqs[name]][0],
            "outbox": backlog, "outbox_age": float(age or 0),
        }
    return {"at": dt.datetime.now(dt.timezone.utc), "services": services, "completeness": rates,
            "alerts": None if alerts is None else {"waiting": alerts[0], "oldest": float(alerts[1]),
                                                   "given_up": alerts[2]},
            "retrying": None if depths is None else sum(depths[q][0] for q in delays),
            "autovacuum": autovacuum, "problems": problems}


def render(report: dict) -> tuple[str, bool]:
    lines = [f"statnet status at {show(report['at'].replace(microsecond=0))}", "",
             f"{'service':<12} {'state':<6} {'queued':>7} {'dead letters':>13} {'outbox':>7} {'oldest':>8}"]
    unwell = []
    for name, s in report["services"].items():
        stuck = s["outbox_age"] > STUCK_SECONDS
        if s["up"] is False:
            unwell.append(f"{name} is down")
        if s["dead_letters"]:
            unwell.append(f"{name} parked {s['dead_letters']} dead letter(s) (statnet dlq list {name}, then replay or drop)")
        if stuck:
            unwell.append(f"{name}'s outbox has not been published for {s['outbox_age']:.0f}s")
        outbox = "-" if s["outbox"] is None else str(s["outbox"])
        oldest = "-" if s["outbox"] is None else f"{s['outbox_age']:.0f}s"
        state = "?" if s["up"] is None else "up" if s["up"] else "DOWN"
        queued, dead = ("?" if v is None else v for v in (s["queued"], s["dead_letters"]))
        lines.append(f"{name:<12} {state:<6} {queued:>7} {dead:>13} "
                     f"{outbox:>7} {oldest:>8}{'  STUCK' if stuck else ''}")
    if report.get("retrying"):
        lines.append(f"retrying: {report['retrying']} message(s) wait in the delay queues for another attempt "
                     "(the services' logs say why)")
    alerts = report.get("alerts")
    if alerts and (alerts["waiting"] or alerts["given_up"]):
        lines.append(f"alerts: {alerts['waiting']} waiting to go out (oldest {alerts['oldest']:.0f}s), "
                     f"{alerts['given_up']} given up (GET /api/notifications?status=FAILED)")
        if alerts["waiting"] and alerts["oldest"] > ALERT_STUCK_SECONDS:
            unwell.append(f"alerts have waited {alerts['oldest']:.0f}s to go out (is the SMTP relay or the "
                          "webhook down? GET /api/notifications?status=PENDING names the error)")
    lines += ["", f"{'data set':<14} {'unit':<10} {'period':<8} {'deadline':<8} {'complete':>9} {'on time':>8}"]
    for ds, ou, pe, deadline, rate, on_time in report["completeness"]:
        lines.append(f"{ds:<14} {ou:<10} {pe:<8} {deadline:<8} {rate:>9.0%} {on_time:>8.0%}")
    if not report["completeness"]:
        lines.append("(no data set is expected anywhere yet)" if not report["problems"] else "(unknown)")
    if report.get("autovacuum") is False:
        # not a verdict (nothing fails today), a warning: every return updates and deletes
        # rows (its status, the outboxes), and without autovacuum their dead space grows for
        # ever (1.3 KB an event in the outboxes alone, a soak probe measured)
        lines.append("WARNING: PostgreSQL's autovacuum is off: the tables statnet updates with every return "
                     "grow without bound (turn it on in postgresql.conf, or VACUUM on a schedule)")
    lines += [f"UNREADABLE: {problem}" for problem in report["problems"]]
    # the verdict the exit status gives, in words (an exit status of 1 alone said nothing)
    unwell += ["not everything could be read (UNREADABLE above)"] if report["problems"] else []
    lines += ["", "NOT HEALTHY: " + "; ".join(unwell) if unwell else "healthy"]
    return "\n".join(lines), not unwell


def main(settings: Settings) -> int:
    report = collect(settings)
    text, healthy = render(report)
    print(text)
    return 0 if healthy else 1
