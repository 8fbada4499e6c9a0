"""Who gets which alert, recorded once (CONTRACT 7).

Recipients of an alert about unit U: the ``supervisor`` focal points at U and
at every ancestor of U up to the root (REMINDER: U's own ``reporter`` focal
points). One notification row per (type, recipient, unit, data set, period,
channel), inserted with ON CONFLICT DO NOTHING in one statement: a
redelivered event or a second notify instance adds nothing.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from services.notify import tables as t
from shared.periods import Period
from shared.replica import FocalPoint, Metadata


def supervisors(md: Metadata, org_unit: str, period: str | None = None) -> list[FocalPoint]:
    """Supervisors at the unit and above it where it sat when ``period`` began (the
    deadline check reads the hierarchy so too: a village moved in October has its
    September answered for by its old district's supervisors, as its September data
    stays in that district's totals); today's place without a period, or before the
    unit existed."""
    unit, day = md.org_units.get(org_unit), None
    if period is not None and unit is not None:
        start = Period.parse(period).start
        day = start if unit.path_on(start) else None
    out = []
    for code in md.ancestors(org_unit, day):
        out += [fp for fp in md.focal_points_by_unit.get(code, []) if fp.role == "supervisor"]
    return out


def reporters(md: Metadata, org_unit: str) -> list[FocalPoint]:
    return [fp for fp in md.focal_points_by_unit.get(org_unit, []) if fp.role == "reporter"]


def names(md: Metadata, data_set: str, org_unit: str) -> dict:
    ds, ou = md.data_sets.get(data_set), md.org_units.get(org_unit)
    return {"data_set": {"en": ds.name if ds else data_set, "lo": (ds.name_lo or ds.name) if ds else data_set},
            "org_unit": {"en": ou.name if ou else org_unit, "lo": (ou.name_lo or ou.name) if ou else org_unit}}


def record(conn: sa.Connection, kind: str, recipients: list[FocalPoint], org_unit: str, data_set: str,
           period: str, details: dict, webhook: bool) -> list[int]:
    """Insert the notifications of one alert; returns the ids of those that are new."""
    rows = []
    for fp in recipients:
        base = {"type": kind, "recipient": fp.code, "org_unit": org_unit, "data_set": data_set,
                "period": period, "status": "PENDING",
                "details": {**details, "recipient_name": fp.name, "language": fp.language,
                            "email": fp.email}}
        # an e-mail row even without an address: the dispatcher marks it FAILED ("no e-mail
        # address"), so a supervisor nobody can reach shows in the notifications and the
        # metrics rather than the alert silently never existing
        rows.append({**base, "channel": "email"})
        if webhook:
            rows.append({**base, "channel": "webhook"})
    if not rows:
        return []
    stmt = insert(t.notification).values(rows).on_conflict_do_nothing(constraint="notification_once")
    return list(conn.execute(stmt.returning(t.notification.c.id)).scalars())
