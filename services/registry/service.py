"""Registry service: the source of metadata, users and what the traffic shows.

Event flow::

    POST /api/metadata  -> import_metadata -> registry.metadata_changed  -> every replica
    POST /api/users     -> create_user     -> registry.user_changed      -> gateway token cache
    validation.return_validated -> learn_from_accepted_return (lastSubmission, lastActiveAt)
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from marshmallow import ValidationError
from nameko.rpc import rpc
from sqlalchemy.dialects.postgresql import insert

from services.registry import exporter, importer
from services.registry import tables as t
from shared import auth, local, serialization
from shared.api import api_rpc, error, flag, not_found, reply
from shared.delivery import Database
from shared.events import subscribe
from shared.local import RpcProxy
from shared.periods import show, today
from shared.returns import reported_places
from shared.schemas.api import FocalPointUpdateSchema, UserSchema

log = logging.getLogger(__name__)


def _conflicts(exc: ValidationError, body) -> list[dict]:
    out = []
    for name, messages in exc.normalized_messages().items():
        value = body.get(name) if isinstance(body, dict) else None
        out.append({"object": name, "value": value,
                    "message": f"{name}: {'; '.join(map(str, messages if isinstance(messages, list) else [messages]))}"})
    return out


def import_document(tx, document, stored: importer.StoredCombos | None = None,
                    with_returns: importer.DataSetsWithReturns | None = None) -> tuple[importer.Plan, int]:
    """Plan and write an import in ``tx`` (serialised with every other import)."""
    reg = _registry_alone(tx)
    old_paths = importer.load_paths(tx.conn)
    plan = importer.plan(document, reg, old_paths, today(), stored, with_returns)
    if not plan.changed:
        return plan, reg.version
    return plan, _write(tx, plan, {**old_paths, **plan.paths})


def _registry_alone(tx) -> importer.Registry:
    """The registry as it is, read under the lock every metadata change takes in ``tx``."""
    tx.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('statnet.registry.metadata'))"))
    return importer.load_registry(tx.conn)


def _write(tx, plan: importer.Plan, all_paths: dict) -> int:
    """A plan written as the next metadata version, and told to every replica; that version."""
    version = importer.write(tx.conn, plan)
    tx.emit("metadata_changed", importer.changes_payload(plan, version, all_paths))
    return version


# a focal point not retired (one who left is listed, counted, credited and linked no more)
_ACTIVE = t.focal_point.c.retired_on.is_(None)


def _in_force(dated: sa.Table, day) -> sa.ColumnElement[bool]:
    """A dated row (a unit's path or parent link) in force on ``day``."""
    return sa.and_(dated.c.valid_from <= day, sa.or_(dated.c.valid_to.is_(None), dated.c.valid_to > day))


def _within_scope(tx, user: dict, org_unit: str) -> bool:
    """Whether a scoped user's subtree (today) holds ``org_unit``; unscoped users hold all."""
    if user.get("orgUnit") is None or user["role"] not in ("supervisor", "reporter"):
        return True
    p, day = t.org_unit_path, today()
    # (where it sits today: a move scheduled for next year is not where it is)
    return tx.execute(sa.select(p.c.code).where(
        p.c.code == org_unit, _in_force(p, day),
        p.c.path.contains(f"/{user['orgUnit']}/", autoescape=True))).first() is not None


def upsert_user(tx, body: dict) -> dict:
    """Create a user or rotate its token (CONTRACT 2); returns the user with the new token."""
    data = UserSchema().load(body)
    if data.get("orgUnit") is not None:
        exists = tx.execute(sa.select(t.org_unit.c.code).where(t.org_unit.c.code == data["orgUnit"])).first()
        if not exists:
            raise ValidationError({"orgUnit": [f"unknown org unit {data['orgUnit']!r}"]})
    focal_point = data.get("focalPoint")
    if focal_point is not None:
        fp_unit = tx.execute(sa.select(t.focal_point.c.org_unit, t.focal_point.c.retired_on)
                             .where(t.focal_point.c.code == focal_point)).first()
        if not fp_unit:
            raise ValidationError({"focalPoint": [f"unknown focal point {focal_point!r}"]})
        if fp_unit.retired_on is not None:
            raise ValidationError({"focalPoint": [f"focal point {focal_point!r} retired on {fp_unit.retired_on}"]})
        if not _within_scope(tx, data, fp_unit.org_unit):
            raise ValidationError({"focalPoint": [
                f"focal point {focal_point!r} is at org unit {fp_unit.org_unit!r}, outside the user's "
                f"scope {data['orgUnit']!r}"]})
    else:
        # a re-post that does not name it keeps the user's link (the contract's rotation
        # sends username, role and orgUnit only: it cut the link, and the focal point's
        # lastActiveAt stopped), while the focal point is still in the user's scope
        # (one retired is kept no more, nor found by its name: the person left)
        kept = None if "focalPoint" in data else tx.execute(
            sa.select(t.focal_point.c.code, t.focal_point.c.org_unit)
            .join(t.user_account, t.user_account.c.focal_point == t.focal_point.c.code)
            .where(t.user_account.c.username == data["username"], _ACTIVE)).first()
        # else a user named like a focal point's code acts for that focal point (if it is the
        # user's to act for: a name alike in another district is a coincidence, not a link;
        # a focal point made after the user is found when its returns are accepted)
        named = kept or tx.execute(sa.select(t.focal_point.c.code, t.focal_point.c.org_unit)
                                   .where(t.focal_point.c.code == data["username"], _ACTIVE)).first()
        focal_point = named.code if named and _within_scope(tx, data, named.org_unit) else None
    token = auth.new_token()
    row = {"username": data["username"], "role": data["role"], "org_unit": data.get("orgUnit"),
           "focal_point": focal_point, "token_hash": auth.token_hash(token)}
    # the change's time read once the user's row is locked (clock_timestamp, not the
    # transaction's start): two rotations at once get their times in the order they commit,
    # which gateways compare (user_changed's changed_at)
    stmt = insert(t.user_account).values(**row, token_rotated_at=sa.func.clock_timestamp())
    changed_at = tx.execute(stmt.on_conflict_do_update(
        index_elements=[t.user_account.c.username],
        set_={"role": stmt.excluded.role, "org_unit": stmt.excluded.org_unit,
              "focal_point": stmt.excluded.focal_point, "token_hash": stmt.excluded.token_hash,
              "token_rotated_at": sa.func.clock_timestamp()}).returning(t.user_account.c.token_rotated_at)).scalar_one()
    tx.emit("user_changed", {"username": row["username"], "role": row["role"], "org_unit": row["org_unit"],
                             "changed_at": changed_at})
    return {"username": row["username"], "role": row["role"], "orgUnit": row["org_unit"],
            "focalPoint": focal_point, "token": token}


class RegistryService:
    name = "registry"

    db = Database(t.metadata)
    # asked, only when an import would narrow a data element's value type or drop a combo,
    # whether values would be stranded: the stored values are aggregation's
    aggregation = RpcProxy("aggregation")
    submission = RpcProxy("submission")

    # ---------------------------------------------------------------- metadata

    @api_rpc
    def import_metadata(self, principal, document):
        principal.require("metadata.write")
        try:
            with self.db.transaction() as tx:
                plan, version = import_document(tx, document, self._stored_combos, self._data_sets_with_returns)
        except importer.ImportRefused as exc:
            return reply({"status": "ERROR", "httpStatusCode": 409, "errors": exc.errors}, 409)
        except local.Unavailable as exc:
            raise error(503, f"cannot tell whether data is stored for what this document changes: {exc}") from None
        log.info("metadata import: %d created, %d updated, %d unchanged; version %d",
                 plan.created, plan.updated, plan.ignored, version)
        body = {"status": "OK", "stats": {"created": plan.created, "updated": plan.updated,
                                          "ignored": plan.ignored,
                                          "total": plan.created + plan.updated + plan.ignored}}
        return {**reply(body), "metadata_version": version}

    # stored (aggregation) or on their way there (submission: validated against the metadata
    # before this change, a return in flight would bring in what the change was refused for)
    def _stored_combos(self, asked: dict[str, list[str]]) -> dict[str, list[str]]:
        out = {de: set(combos) for de, combos in
               local.ask(self.aggregation, "aggregation", "stored_combos", asked).items()}
        for de, combos in local.ask(self.submission, "submission", "combos_in_flight", asked).items():
            out.setdefault(de, set()).update(combos)
        return {de: sorted(combos) for de, combos in out.items()}

    def _data_sets_with_returns(self, asked: list[str]) -> list[str]:
        return sorted(set(local.ask(self.aggregation, "aggregation", "data_sets_with_returns", asked))
                      | set(local.ask(self.submission, "submission", "data_sets_in_flight", asked)))

    @api_rpc
    def export_metadata(self, principal, params: dict):
        """``GET /api/metadata``: the metadata as the import document (``exporter``)."""
        principal.require("read")
        with self.db.connect() as conn:
            return reply(exporter.document(conn, principal, params))

    @rpc
    def metadata_since(self, since: int) -> dict:
        """Catch-up for replicas: every object changed after version ``since``."""
        from shared.schemas.metadata import MetadataChangesSchema

        with self.db.connect() as conn:
            return MetadataChangesSchema().dump(importer.changes_since(conn, since))

    @rpc
    def metadata_version(self) -> int:
        with self.db.connect() as conn:
            return conn.execute(sa.select(t.state.c.version).where(t.state.c.id == 1)).scalar_one()

    # ---------------------------------------------------------------- org units

    def _current_path(self, conn, code: str) -> str | None:
        day = today()
        p = t.org_unit_path
        return conn.execute(sa.select(p.c.path).where(
            p.c.code == code, _in_force(p, day))).scalar()

    def _visible(self, conn, principal, code: str) -> str:
        """The unit's current path, after checking it exists and is in scope."""
        if not conn.execute(sa.select(t.org_unit.c.code).where(t.org_unit.c.code == code)).first():
            raise not_found(f"org unit {code!r}")
        path = self._current_path(conn, code)
        principal.require_path(code, path)
        return path

    @api_rpc
    def get_org_unit(self, principal, code: str):
        principal.require("read")
        with self.db.connect() as conn:
            path = self._visible(conn, principal, code)
            unit = conn.execute(sa.select(t.org_unit).where(t.org_unit.c.code == code)).one()
            # a unit not open yet is shown as it will open (its path and level were, its
            # parent was none)
            now = today()
            day = max(now, unit.opening_date)
            link = t.org_unit_link
            current = _in_force(link, day)
            parent = conn.execute(sa.select(link.c.parent).where(link.c.code == code, current)).scalar()
            # and those not open yet that will open under it, as they are shown themselves
            # (and as its subtree's metadata export lists them)
            opens_under = sa.and_(t.org_unit.c.opening_date > now, link.c.valid_from == t.org_unit.c.opening_date)
            children = conn.execute(sa.select(link.c.code).join(t.org_unit, t.org_unit.c.code == link.c.code)
                                    .where(link.c.parent == code, sa.or_(current, opens_under))
                                    .order_by(link.c.code)).scalars().all()
            history = [{"parent": r.parent, "from": r.valid_from.isoformat(),
                        "to": r.valid_to.isoformat() if r.valid_to else None}
                       for r in conn.execute(sa.select(link).where(link.c.code == code)
                                             .order_by(link.c.valid_from))]
            fps = conn.execute(sa.select(t.focal_point).where(t.focal_point.c.org_unit == code, _ACTIVE)
                               .order_by(t.focal_point.c.code)).all()
            last = conn.execute(sa.select(t.last_submission).where(t.last_submission.c.org_unit == code)
                                .order_by(t.last_submission.c.data_set)).all()
        return reply({
            "code": unit.code, "name": unit.name, "nameLo": unit.name_lo,
            "level": path.count("/") - 1 if path else None, "path": path,
            "parent": parent, "children": list(children), "hierarchy": history,
            "openingDate": unit.opening_date.isoformat(),
            "closedDate": unit.closed_date.isoformat() if unit.closed_date else None,
            "generated": unit.generated,
            "focalPoints": [_focal_point_out(f) for f in fps],
            "lastSubmission": [_last_submission_out(r) for r in last],
        })

    @api_rpc
    def coverage(self, principal, code: str):
        """Units of a subtree without a reporter or supervisor, and each unit's last returns."""
        principal.require("read")
        day = today()
        with self.db.connect() as conn:
            root_path = self._visible(conn, principal, code)
            p, fp, ls = t.org_unit_path, t.focal_point, t.last_submission
            units = conn.execute(
                sa.select(p.c.code, p.c.path, p.c.level, t.org_unit.c.name, t.org_unit.c.name_lo,
                          t.org_unit.c.generated)
                .join(t.org_unit, t.org_unit.c.code == p.c.code)
                .where(p.c.path.startswith(root_path, autoescape=True), _in_force(p, day),
                       t.org_unit.c.opening_date <= day,  # (a unit opening later has a place already)
                       sa.or_(t.org_unit.c.closed_date.is_(None), t.org_unit.c.closed_date >= day))
                .order_by(p.c.path)).all()
            roles = {}
            for r in conn.execute(sa.select(fp.c.org_unit, fp.c.role, sa.func.count())
                                  .where(_ACTIVE)  # (one who left covers nothing)
                                  .group_by(fp.c.org_unit, fp.c.role)):
                roles[(r.org_unit, r.role)] = r[2]
            last: dict[str, list] = {}
            for r in conn.execute(sa.select(ls).join(p, p.c.code == ls.c.org_unit)
                                  .where(p.c.path.startswith(root_path, autoescape=True), _in_force(p, day))
                                  .order_by(ls.c.data_set)):
                last.setdefault(r.org_unit, []).append(_last_submission_out(r))
            data_sets = conn.execute(sa.select(t.data_set.c.org_units, t.data_set.c.org_unit_level)).all()
        explicit = {code for ds in data_sets for code in ds.org_units}
        levels = {ds.org_unit_level for ds in data_sets if ds.org_unit_level is not None}
        out, no_reporter, no_supervisor = [], [], []
        for u in units:
            ancestors = [c for c in u.path.split("/") if c]
            supervisors = sum(roles.get((a, "supervisor"), 0) for a in ancestors)
            reporters = roles.get((u.code, "reporter"), 0)
            # a reporter is wanted where a return is: a unit assigned a data set (the province
            # itself, reporting nothing, was listed as wanting one)
            reports = u.code in explicit or u.level in levels
            missing = [r for r, n, wanted in (("reporter", reporters, reports), ("supervisor", supervisors, True))
                       if wanted and n == 0]
            if reports and reporters == 0:
                no_reporter.append(u.code)
            if supervisors == 0:
                no_supervisor.append(u.code)
            out.append({"code": u.code, "name": u.name, "nameLo": u.name_lo, "level": u.level,
                        "generated": u.generated, "reporters": reporters,
                        "supervisors": supervisors, "reports": reports, "missing": missing,
                        "lastSubmission": last.get(u.code, [])})
        return reply({"orgUnit": code, "units": out,
                      "withoutReporter": no_reporter, "withoutSupervisor": no_supervisor,
                      "summary": {"units": len(out), "withoutReporter": len(no_reporter),
                                  "withoutSupervisor": len(no_supervisor)}})

    # ---------------------------------------------------------------- focal points

    @api_rpc
    def list_focal_points(self, principal, org_unit: str | None = None, include_retired: str | None = None):
        """The focal points (of a unit), those retired only when asked (``includeRetired``)."""
        principal.require("read")
        retired = flag({"includeRetired": include_retired}, "includeRetired")
        with self.db.connect() as conn:
            query = sa.select(t.focal_point).order_by(t.focal_point.c.code)
            if not retired:
                query = query.where(_ACTIVE)
            if org_unit:
                self._visible(conn, principal, org_unit)
                query = query.where(t.focal_point.c.org_unit == org_unit)
            rows = conn.execute(query).all()
            if not principal.unscoped:
                rows = [r for r in rows if principal.covers_path(self._current_path(conn, r.org_unit))]
        return reply({"focalPoints": [_focal_point_out(r) for r in rows]})

    @api_rpc
    def put_focal_point(self, principal, code: str, body):
        principal.require("focal_points.write")
        try:
            item = FocalPointUpdateSchema().load(body if isinstance(body, dict) else {})
        except ValidationError as exc:
            raise error(400, "invalid focal point", conflicts=_conflicts(exc, body))
        if item.get("code", code) != code:
            raise error(400, f"code {item['code']!r} in the body differs from {code!r} in the path")
        # (the writer is an admin, whose scope is everything; an unknown org unit is refused
        # by the import, in metadata's 409 shape, as POST /api/metadata refuses it)
        document = {"focalPoints": [{**{k: v for k, v in body.items() if k not in FocalPointUpdateSchema.READ_ONLY},
                                     "code": code}]}
        try:
            with self.db.transaction() as tx:
                plan, version = import_document(tx, document)
        except importer.ImportRefused as exc:
            return reply({"status": "ERROR", "httpStatusCode": 409, "errors": exc.errors}, 409)
        with self.db.connect() as conn:
            row = conn.execute(sa.select(t.focal_point).where(t.focal_point.c.code == code)).one()
        return {**reply(_focal_point_out(row), 201 if plan.created else 200), "metadata_version": version}

    @api_rpc
    def retire_focal_point(self, principal, code: str):
        """``DELETE /api/focalPoints/{code}``: the person left. Retired from today: no alert is
        addressed to them any more, what waits for them is given up (notify), and they are
        listed nowhere but by ``includeRetired``; kept, with what was sent to them. A PUT
        or an import naming the code makes them active again. Retiring twice is the first."""
        principal.require("focal_points.write")
        with self.db.transaction() as tx:
            reg = _registry_alone(tx)
            existing = reg.focal_points.get(code)
            if existing is None:
                raise not_found(f"focal point {code!r}")
            version = reg.version
            if existing.get("retired_on") is None:
                plan = importer.Plan(since=reg.version, updated=1)
                plan.focal_points[code] = {**existing, "retired_on": today()}
                version = _write(tx, plan, {})
            row = tx.execute(sa.select(t.focal_point).where(t.focal_point.c.code == code)).one()
        log.info("focal point %s retired on %s", code, row.retired_on)
        return {**reply(_focal_point_out(row)), "metadata_version": version}

    # ---------------------------------------------------------------- users

    @api_rpc
    def create_user(self, principal, body):
        principal.require("users.write")
        try:
            with self.db.transaction() as tx:
                user = upsert_user(tx, body if isinstance(body, dict) else {})
        except ValidationError as exc:
            raise error(400, "invalid user", conflicts=_conflicts(exc, body))
        return reply(user, 201)

    @rpc
    def authenticate(self, token_hash: str) -> dict | None:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(t.user_account).where(t.user_account.c.token_hash == token_hash)).first()
        if row is None:
            return None
        # as of which change: a gateway told of that very change later keeps this answer
        return {**auth.Principal(row.username, row.role, row.org_unit, row.focal_point).to_dict(),
                "changed_at": row.token_rotated_at.isoformat()}

    # ---------------------------------------------------------------- learning from traffic

    @subscribe("validation", "return_validated", batch=50)
    def learn_from_accepted_return(self, events):
        with self.db.consume_many(events) as tx:
            # every unit the return reports for (a district's CSV of its villages: each of them)
            places = [(e, reported_places(e.data)) for e in tx.fresh]
            rows = [{"org_unit": org_unit, "data_set": e.data["data_set"], "period": period,
                     "return_id": e.data["return_id"], "received_at": e.data["received_at"],
                     "accepted_at": e.occurred_at, "submitted_by": e.data["submitted_by"]}
                    for e, named in places for org_unit, period in named]
            if rows:
                tx.execute(_NOTE_SUBMISSIONS, {"rows": serialization.dumps(rows), "today": today()})
        for e, named in places:
            log.info("return %s: last submission of %s for %s noted", e.data["return_id"],
                     ", ".join(sorted({ou for ou, _ in named})), e.data["data_set"])


# A batch of accepted returns, in one statement: the latest received per unit and data
# set becomes its lastSubmission (unless a later one is there already), and each sender's
# focal point (its own, or the sole one of its role at its unit) was last active when its
# latest return was accepted.
_NOTE_SUBMISSIONS = sa.text(f"""
WITH x AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json))
        AS x(org_unit text, data_set text, period text, return_id text, received_at timestamptz,
             accepted_at timestamptz, submitted_by text)
),
noted AS (
    INSERT INTO {t.last_submission.fullname} AS s (org_unit, data_set, period, return_id, received_at, accepted_at)
    SELECT DISTINCT ON (org_unit, data_set) org_unit, data_set, period, return_id, received_at, accepted_at
    FROM x ORDER BY org_unit, data_set, received_at DESC, period DESC
    ON CONFLICT (org_unit, data_set) DO UPDATE
        SET period = excluded.period, return_id = excluded.return_id, received_at = excluded.received_at,
            accepted_at = excluded.accepted_at
        WHERE s.received_at < excluded.received_at
)
UPDATE {t.focal_point.fullname} f
SET last_active_at = greatest(coalesce(f.last_active_at, a.at), a.at)
FROM (SELECT coalesce(linked.code, named.code, sole.code) AS focal_point, max(x.accepted_at) AS at
      FROM x JOIN {t.user_account.fullname} u ON u.username = x.submitted_by
      -- a user linked to no focal point acts for the one named like it in its scope (made
      -- after the user: the link made at the user's creation found none), else for the
      -- one of its role at its org unit, when there is exactly one (the person
      -- responsible there: CONTRACT 3)
      -- (the linked one while active: one who left credits the sole one of the unit, a successor)
      LEFT JOIN {t.focal_point.fullname} linked ON linked.code = u.focal_point AND linked.retired_on IS NULL
      LEFT JOIN LATERAL (
          SELECT fp.code FROM {t.focal_point.fullname} fp
          JOIN {t.org_unit_path.fullname} p ON p.code = fp.org_unit AND p.valid_from <= CAST(:today AS date)
                                              AND (p.valid_to IS NULL OR p.valid_to > CAST(:today AS date))
          WHERE fp.code = u.username AND fp.retired_on IS NULL
            AND (u.org_unit IS NULL OR u.role NOT IN ('supervisor', 'reporter')
                 OR strpos(p.path, '/' || u.org_unit || '/') > 0)) named ON true
      LEFT JOIN LATERAL (
          SELECT min(fp.code) AS code FROM {t.focal_point.fullname} fp
          WHERE fp.org_unit = u.org_unit AND fp.role = u.role AND fp.retired_on IS NULL
          HAVING count(*) = 1) sole ON true
      GROUP BY 1) a
WHERE f.code = a.focal_point AND f.retired_on IS NULL  -- (one who left is active no more)
""")


def _focal_point_out(r) -> dict:
    return {"code": r.code, "name": r.name, "orgUnit": r.org_unit, "role": r.role, "email": r.email,
            "phone": r.phone, "language": r.language, "digest": r.digest,
            "lastActiveAt": show(r.last_active_at),
            "retiredOn": r.retired_on.isoformat() if r.retired_on else None}


def _last_submission_out(r) -> dict:
    return {"dataSet": r.data_set, "period": r.period, "receivedAt": show(r.received_at),
            "returnId": r.return_id}
