"""``POST /api/metadata``: create-or-update by code, all or nothing.

The import is planned in memory against the current registry (``plan``),
which collects *every* problem before anything is written; only a clean plan
is written (``write``), in one transaction, as one new metadata version, with
one ``metadata_changed`` event carrying the new state of every object whose
state changed, including descendants whose path moved with an ancestor.
Re-importing the same document changes nothing and creates no version.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy.dialects.postgresql import insert

from services.registry import tables as t
from services.registry.hierarchy import CycleError, Link, Path, compute_paths, merge, parent_on, set_parent
from shared import expressions
from shared.schemas.api import METADATA_LISTS
from shared.values import keeps_stored_values

KIND = {"orgUnits": "org unit", "dataElements": "data element", "dataSets": "data set",
        "validationRules": "validation rule", "focalPoints": "focal point"}
DEFAULT_COMBO = "default"
DEFAULT_TIMELY_DAYS = 15


class ImportRefused(Exception):
    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


@dataclass
class Registry:
    """The registry's current metadata, as plain state dicts keyed by code."""
    version: int
    org_units: dict[str, dict]
    links: dict[str, list[Link]]
    data_elements: dict[str, dict]
    data_sets: dict[str, dict]
    validation_rules: dict[str, dict]
    focal_points: dict[str, dict]


@dataclass
class Plan:
    since: int
    org_units: dict[str, dict] = field(default_factory=dict)        # changed unit states
    links: dict[str, list[Link]] = field(default_factory=dict)      # changed timelines
    paths: dict[str, list[Path]] = field(default_factory=dict)      # changed paths
    data_elements: dict[str, dict] = field(default_factory=dict)
    data_sets: dict[str, dict] = field(default_factory=dict)
    validation_rules: dict[str, dict] = field(default_factory=dict)
    focal_points: dict[str, dict] = field(default_factory=dict)
    created: int = 0
    updated: int = 0
    ignored: int = 0

    @property
    def changed(self) -> bool:
        return any((self.org_units, self.links, self.paths, self.data_elements, self.data_sets,
                    self.validation_rules, self.focal_points))


# ------------------------------------------------------------------ reading

def load_registry(conn: sa.Connection) -> Registry:
    version = conn.execute(sa.select(t.state.c.version).where(t.state.c.id == 1)).scalar_one()
    links: dict[str, list[Link]] = {}
    for r in conn.execute(sa.select(t.org_unit_link).order_by(t.org_unit_link.c.valid_from)):
        links.setdefault(r.code, []).append(Link(r.parent, r.valid_from, r.valid_to))

    def by_code(table, skip=("version",)):
        return {r.code: {k: v for k, v in r._mapping.items() if k not in skip}
                for r in conn.execute(sa.select(table))}

    return Registry(
        version=version,
        org_units=by_code(t.org_unit),
        links=links,
        data_elements=by_code(t.data_element),
        data_sets=by_code(t.data_set),
        validation_rules=by_code(t.validation_rule),
        focal_points=by_code(t.focal_point, skip=("version", "last_active_at")),
    )


def load_paths(conn: sa.Connection) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for r in conn.execute(sa.select(t.org_unit_path).order_by(t.org_unit_path.c.valid_from)):
        out.setdefault(r.code, []).append(Path(r.path, r.level, r.valid_from, r.valid_to))
    return out


# ------------------------------------------------------------------ planning

class _Errors:
    def __init__(self):
        self.items: list[dict] = []
        self._told: set[tuple[str, str]] = set()

    def add(self, obj: str, message: str) -> None:
        if (obj, message) not in self._told:  # (an element twice in one expression was told twice)
            self._told.add((obj, message))
            self.items.append({"object": obj, "message": message})

    def __bool__(self):
        return bool(self.items)


def _parse_document(doc, errors: _Errors) -> dict[str, list[dict]]:
    if not isinstance(doc, dict):
        errors.add("document", "metadata must be a JSON object with lists such as orgUnits, dataSets")
        return {}
    for key in doc:
        if key not in METADATA_LISTS:
            errors.add(key, f"unknown list {key!r}; expected one of {', '.join(METADATA_LISTS)}")
    parsed: dict[str, list[dict]] = {}
    for key, schema_cls in METADATA_LISTS.items():
        items = doc.get(key) or []
        if not isinstance(items, list):
            errors.add(key, f"{key} must be a list")
            continue
        schema, seen, out = schema_cls(), set(), []
        for i, item in enumerate(items):
            code = item.get("code") if isinstance(item, dict) else None
            obj = code if isinstance(code, str) and code else f"{key}[{i}]"
            try:
                loaded = schema.load(item)
            except ValidationError as exc:
                for name, messages in _flatten(exc.messages):
                    value = item.get(name) if isinstance(item, dict) and name in item else None
                    shown = f" (value {value!r})" if value is not None else ""
                    errors.add(obj, f"{KIND[key]} {obj}: {name}: {'; '.join(messages)}{shown}")
                continue
            if loaded["code"] in seen:
                errors.add(obj, f"duplicate code {loaded['code']!r} in {key}")
                continue
            seen.add(loaded["code"])
            out.append(loaded)
        parsed[key] = out
    return parsed


def _flatten(messages, prefix="") -> list[tuple[str, list[str]]]:
    if isinstance(messages, list):
        return [(prefix or "_schema", [str(m) for m in messages])]
    out = []
    for key, value in messages.items():
        out += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _merge(current: dict | None, changes: dict, fields: dict[str, str]) -> dict:
    """Current state with the fields present in the document replaced (import name -> state name)."""
    state = dict(current or {})
    for src, dst in fields.items():
        if src in changes:
            state[dst] = changes[src]
    return state


def _missing(state: dict, required: dict[str, str]) -> list[str]:
    return [src for src, dst in required.items() if state.get(dst) in (None, "")]


# of these category option combos of each data element, those with stored values (aggregation's)
StoredCombos = Callable[[dict[str, list[str]]], dict[str, list[str]]]


def _references(rule: dict, side: str) -> list:
    """What one side of a rule's expression refers to (raises ExpressionError when bad)."""
    return expressions.references(expressions.parse(rule[side]))


def _reference_problems(refs: list, side: str, de_states: dict[str, dict]) -> list[tuple[str | None, str]]:
    """What is wrong with what a rule's expression refers to (``refs``): (data element, message)."""
    out: list[tuple[str | None, str]] = []
    for ref in refs:
        de = de_states.get(ref.data_element)
        if de is None:
            out.append((None, f"{side} expression refers to unknown data element {ref.data_element!r}"))
        elif ref.combo is not None and ref.combo not in de["combos"]:
            out.append((de["code"], f"{side} expression refers to {ref.data_element}.{ref.combo}, but "
                                    f"{ref.data_element} has combos {', '.join(de['combos'])}"))
        elif de["value_type"] == "TEXT":
            out.append((de["code"], f"{side} expression computes with {ref.data_element}, a TEXT data element"))
    return out


# of these data sets, those with returns stored (aggregation's completeness registrations)
DataSetsWithReturns = Callable[[list[str]], list[str]]


def _timeline(code: str, item: dict, unit_codes: set[str], errors: "_Errors") -> list[Link] | None:
    """A unit's ``hierarchy`` as its links, or None with the errors said: parents known and
    not itself, dates rising, each ``to`` (if given) the next ``from``, ``parent`` (if given)
    the last one, and no ``parentFrom`` beside it. A first ``from`` before the unit's opening
    is taken as it is (a first link holds from the beginning anyway): what ``parentFrom``
    allows, and what an opening date moved later leaves, must post back from the export."""
    given = item["hierarchy"]
    problems = []
    if "parentFrom" in item:
        problems.append("give hierarchy or parentFrom, not both")
    for n, link in enumerate(given):
        if link["parent"] is not None and link["parent"] not in unit_codes:
            problems.append(f"hierarchy[{n}]: unknown parent {link['parent']!r}")
        if link["parent"] == code:
            problems.append(f"hierarchy[{n}]: cycle in the hierarchy: {code} -> {code}")
        following = given[n + 1]["valid_from"] if n + 1 < len(given) else None
        if following is not None and following <= link["valid_from"]:
            problems.append(f"hierarchy[{n + 1}]: from {following} is not after {link['valid_from']}")
        if "valid_to" in link and link["valid_to"] != following:
            problems.append(f"hierarchy[{n}]: to {link['valid_to'] or 'null'} is not the next parent's from "
                            f"({following or 'none: the last runs on'})")
    if "parent" in item and item["parent"] != given[-1]["parent"]:
        problems.append(f"parent {item['parent']!r} is not the hierarchy's last ({given[-1]['parent']!r})")
    for message in problems:
        errors.add(code, f"org unit {code}: {message}")
    if problems:
        return None
    ends = [link["valid_from"] for link in given[1:]] + [None]
    return merge([Link(link["parent"], link["valid_from"], end) for link, end in zip(given, ends)])


def plan(doc, reg: Registry, old_paths: dict[str, list[Path]], today: dt.date,
         stored: StoredCombos | None = None, with_returns: DataSetsWithReturns | None = None) -> Plan:
    """``stored`` says which combos hold values, asked only when a change would strand
    some (a value type narrowed, a combo removed); ``with_returns`` which data sets hold
    returns, asked only when a period type changes; None: nothing is stored anywhere."""
    errors = _Errors()
    parsed = _parse_document(doc, errors)
    p = Plan(since=reg.version)
    # items with schema errors are left out, and planning goes on with the rest, so
    # the answer lists every problem of the document at once

    unit_codes = set(reg.org_units) | {u["code"] for u in parsed.get("orgUnits", [])}
    de_states = dict(reg.data_elements)
    ds_states = dict(reg.data_sets)

    def count(existing, new_state, store: dict, code: str, moved: bool = False):
        if existing is None:
            p.created += 1
            store[code] = new_state
        elif existing != new_state or moved:
            p.updated += 1
            store[code] = new_state
        else:
            p.ignored += 1

    # --- org units and their timelines
    links = {code: list(ls) for code, ls in reg.links.items()}
    for item in parsed.get("orgUnits", []):
        code, existing = item["code"], reg.org_units.get(item["code"])
        state = _merge(existing, item, {"name": "name", "nameLo": "name_lo", "openingDate": "opening_date",
                                        "closedDate": "closed_date", "generated": "generated"})
        state["code"] = code
        state.setdefault("name_lo", None)
        state.setdefault("closed_date", None)
        state.setdefault("generated", False)
        missing = _missing(state, {"name": "name", "openingDate": "opening_date"})
        if missing:
            errors.add(code, f"org unit {code}: {', '.join(missing)} required for a new org unit")
            continue
        if state["closed_date"] and state["closed_date"] < state["opening_date"]:
            errors.add(code, f"org unit {code}: closedDate {state['closed_date']} is before "
                             f"openingDate {state['opening_date']}")
        if existing is not None and state["opening_date"] < existing["opening_date"]:
            # an opening date corrected to an earlier one: the first parent link, which began
            # at the old opening (the default for a new unit), begins at the new one (its place
            # held from the beginning already; this keeps the export a plain parent)
            current = links.get(code, [])
            if current and current[0].valid_from == existing["opening_date"]:
                timeline = [Link(current[0].parent, state["opening_date"], current[0].valid_to), *current[1:]]
                links[code] = timeline
                p.links[code] = timeline
        if "hierarchy" in item:
            timeline = _timeline(code, item, unit_codes, errors)
            if timeline is not None and timeline != links.get(code, []):
                links[code] = timeline
                p.links[code] = timeline
        elif "parent" in item or existing is None:
            parent = item.get("parent")
            if parent is not None and parent not in unit_codes:
                errors.add(code, f"org unit {code}: unknown parent {parent!r}")
                continue
            if parent == code:
                errors.add(code, f"org unit {code}: cycle in the hierarchy: {code} -> {code}")
                continue
            current = links.get(code, [])
            start = item.get("parentFrom")
            if existing is None:
                start = start or state["opening_date"]
            elif start is None:
                # compared with the parent in force today (or at the opening, for a unit not
                # open yet), not the last link: with a move to P scheduled for next year,
                # posting parent P was "no change", and the unit stayed where it was
                on = max(today, state["opening_date"])
                moved = not current or parent_on(current, on) != parent
                start = on if moved else None
            if start is not None:
                timeline = set_parent(current, parent, start)
                if timeline != current:
                    links[code] = timeline
                    p.links[code] = timeline
        count(existing, state, p.org_units, code, moved=code in p.links)

    trial, cycles = dict(links), 0
    while True:
        try:
            new_paths = compute_paths(trial)
            break
        except CycleError as exc:
            # named after a unit this document moves (the one to correct), not a bystander the
            # check happened to start from
            cycle = exc.units[:-1]
            posted = next((u for u in cycle if u in p.links), cycle[0])
            at = cycle.index(posted)
            cycle = cycle[at:] + cycle[:at] + [posted]
            errors.add(posted, f"cycle in the hierarchy from {exc.on}: " + " -> ".join(cycle))
            # that unit set aside, the others are looked for too: every cycle told at once
            trial[posted] = []
            cycles += 1
            if cycles >= 100:
                break
    if cycles:
        new_paths = {}
    for code, paths in new_paths.items():
        if paths != old_paths.get(code):
            p.paths[code] = paths
    for code in set(p.paths) - set(p.org_units):
        # moved with an ancestor: same attributes, new place; replicas need its new paths
        p.org_units[code] = reg.org_units[code]

    # --- data elements
    at_risk: dict[str, tuple[set[str], bool]] = {}  # changes that would strand stored values
    for item in parsed.get("dataElements", []):
        code, existing = item["code"], reg.data_elements.get(item["code"])
        state = _merge(existing, item, {"name": "name", "nameLo": "name_lo", "valueType": "value_type",
                                        "aggregationType": "aggregation_type",
                                        "disaggregation": "combos", "outliers": "outliers"})
        state["code"] = code
        state.setdefault("name_lo", None)
        if not state.get("combos"):
            state["combos"] = [DEFAULT_COMBO]
        if len(set(state["combos"])) != len(state["combos"]):
            errors.add(code, f"data element {code}: duplicate category option combo in disaggregation")
        state["outliers"] = {k: (str(v) if v is not None and k in ("min", "max") else v)
                             for k, v in (state.get("outliers") or {"enabled": True}).items()}
        missing = _missing(state, {"name": "name", "valueType": "value_type",
                                   "aggregationType": "aggregation_type"})
        if missing:
            errors.add(code, f"data element {code}: {', '.join(missing)} required for a new data element")
            continue
        if existing is not None:
            removed = set(existing["combos"]) - set(state["combos"])
            narrowed = not keeps_stored_values(existing["value_type"], state["value_type"])
            if removed or narrowed:
                at_risk[code] = (removed, narrowed)
        de_states[code] = state
        count(existing, state, p.data_elements, code)
    if at_risk and stored is not None:
        held = stored({code: sorted(reg.data_elements[code]["combos"] if narrowed else removed)
                       for code, (removed, narrowed) in sorted(at_risk.items())})
        for code, (removed, narrowed) in at_risk.items():
            combos = set(held.get(code) or ())
            if narrowed and combos:
                errors.add(code, f"data element {code}: valueType cannot change from "
                                 f"{reg.data_elements[code]['value_type']} to {de_states[code]['value_type']}: "
                                 f"values of it are stored (or on their way to the aggregates)")
            for combo in sorted(removed & combos):
                errors.add(code, f"data element {code}: category option combo {combo!r} cannot be removed: "
                                 f"values of {code}.{combo} are stored (or on their way)")

    # --- data sets
    retyped: list[str] = []  # period type changed: returns stored for the old one would be stranded
    for item in parsed.get("dataSets", []):
        code, existing = item["code"], reg.data_sets.get(item["code"])
        if existing is not None:  # (stored as given before its lists were kept sorted)
            existing = {**existing, "data_elements": sorted(existing.get("data_elements") or []),
                        "org_units": sorted(existing.get("org_units") or [])}
        state = _merge(existing, item, {"name": "name", "nameLo": "name_lo", "periodType": "period_type",
                                        "dataElements": "data_elements", "orgUnitLevel": "org_unit_level",
                                        "orgUnits": "org_units", "timelyDays": "timely_days",
                                        "expiryDays": "expiry_days"})
        state["code"] = code
        state.setdefault("name_lo", None)
        state.setdefault("org_unit_level", None)
        state.setdefault("org_units", [])
        state.setdefault("timely_days", DEFAULT_TIMELY_DAYS)
        state.setdefault("expiry_days", 0)
        state.setdefault("data_elements", [])
        missing = _missing(state, {"name": "name", "periodType": "period_type"})
        if missing:
            errors.add(code, f"data set {code}: {', '.join(missing)} required for a new data set")
            continue
        for de in state["data_elements"]:
            if de not in de_states:
                errors.add(code, f"data set {code}: unknown data element {de!r}")
        for ou in state["org_units"]:
            if ou not in unit_codes:
                errors.add(code, f"data set {code}: unknown org unit {ou!r}")
        if len(set(state["data_elements"])) != len(state["data_elements"]):
            errors.add(code, f"data set {code}: a data element is listed twice")
        if len(set(state["org_units"])) != len(state["org_units"]):
            errors.add(code, f"data set {code}: an org unit is listed twice")
        # sets, whatever order a document lists them in: the export (sorted) posted back, or a
        # data set's elements reordered, was an update sent to every replica
        state["data_elements"], state["org_units"] = sorted(state["data_elements"]), sorted(state["org_units"])
        # a unit taken out of the list keeps the periods begun before today (its to correct,
        # counted where it reported: completeness of 2025 lost the unit and its return when
        # it was taken out in 2026); put back, it is assigned again
        ends = dict((existing or {}).get("assignment_ends") or {})
        ends.update({ou: today.isoformat() for ou in (existing or {}).get("org_units", [])
                     if ou not in state["org_units"] and ou not in ends})
        state["assignment_ends"] = {ou: day for ou, day in sorted(ends.items()) if ou not in state["org_units"]}
        if existing is not None and existing["period_type"] != state["period_type"]:
            retyped.append(code)
        ds_states[code] = state
        count(existing, state, p.data_sets, code)
    if retyped and with_returns is not None:
        # its returns' periods (202301) would no longer be its periods: completeness could not
        # count them nor could they be corrected, while analytics still showed their values
        for code in sorted(set(with_returns(sorted(retyped)))):
            errors.add(code, f"data set {code}: periodType cannot change from {reg.data_sets[code]['period_type']} "
                             f"to {ds_states[code]['period_type']}: returns for it are stored or on their way (create a new "
                             "data set for the new period type)")

    # --- validation rules (expressions parsed here: a bad one never reaches validation)
    for item in parsed.get("validationRules", []):
        code, existing = item["code"], reg.validation_rules.get(item["code"])
        state = _merge(existing, item, {"name": "name", "nameLo": "name_lo", "importance": "importance",
                                        "left": "left", "operator": "operator", "right": "right",
                                        "missingValueStrategy": "missing_value_strategy",
                                        "dataSet": "data_set"})
        state["code"] = code
        state.setdefault("name_lo", None)
        state.setdefault("data_set", None)
        state.setdefault("missing_value_strategy", "SKIP_IF_ALL_VALUES_MISSING")
        state.setdefault("importance", "MEDIUM")  # DHIS2's default
        missing = _missing(state, {"name": "name", "left": "left",
                                   "operator": "operator", "right": "right"})
        if missing:
            errors.add(code, f"validation rule {code}: {', '.join(missing)} required for a new rule")
            continue
        if state["data_set"] is not None and state["data_set"] not in ds_states:
            errors.add(code, f"validation rule {code}: unknown data set {state['data_set']!r}")
        referred: set[str] = set()
        for side in ("left", "right"):
            try:
                refs = _references(state, side)
            except expressions.ExpressionError as exc:
                errors.add(code, f"validation rule {code}: bad {side} expression "
                                 f"{state[side]!r}: {exc}")
                continue
            referred |= {ref.data_element for ref in refs}
            for _, message in _reference_problems(refs, side, de_states):
                errors.add(code, f"validation rule {code}: {message}")
        ds_state = ds_states.get(state["data_set"])
        if ds_state is not None and referred and not referred & set(ds_state["data_elements"]):
            # a rule applies to a data set's returns where it is about their elements (as DHIS2
            # picks a data set's rules): about none, it could only ever see missing values
            errors.add(code, f"validation rule {code}: refers to no data element of data set "
                             f"{state['data_set']!r} ({', '.join(sorted(referred))}; it has "
                             f"{', '.join(ds_state['data_elements']) or 'none'})")
        count(existing, state, p.validation_rules, code)
    # rules the document leaves alone must still hold for the data elements it changes
    posted_rules = {item["code"] for item in parsed.get("validationRules", [])}
    for code, rule in sorted(reg.validation_rules.items()):
        if code in posted_rules:
            continue
        referred = set()
        for side in ("left", "right"):
            refs = _references(rule, side)
            referred |= {ref.data_element for ref in refs}
            for de, message in _reference_problems(refs, side, de_states):
                if de in p.data_elements:
                    errors.add(de, f"data element {de}: validation rule {code}'s {message}")
        # and for the data sets it changes: one that drops every element a rule of it is about
        # left the rule judging nothing, and an export its own import refused
        ds = rule.get("data_set")
        if ds in p.data_sets and referred and not referred & set(ds_states[ds]["data_elements"]):
            errors.add(ds, f"data set {ds}: validation rule {code} refers to {', '.join(sorted(referred))}, "
                           "none of which it would still have: change the rule (its data set or expressions) in the same document")

    # --- focal points
    for item in parsed.get("focalPoints", []):
        code, existing = item["code"], reg.focal_points.get(item["code"])
        state = _merge(existing, item, {"name": "name", "orgUnit": "org_unit", "role": "role",
                                        "email": "email", "phone": "phone", "language": "language",
                                        "digest": "digest"})
        state["code"] = code
        state["retired_on"] = None  # named in a document: active (again)
        for key, default in (("email", None), ("phone", None), ("language", "lo"), ("digest", False)):
            state.setdefault(key, default)
        missing = _missing(state, {"name": "name", "orgUnit": "org_unit", "role": "role"})
        if missing:
            errors.add(code, f"focal point {code}: {', '.join(missing)} required for a new focal point")
            continue
        if state["org_unit"] not in unit_codes:
            errors.add(code, f"focal point {code}: unknown org unit {state['org_unit']!r}")
        count(existing, state, p.focal_points, code)

    if errors:
        raise ImportRefused(errors.items)
    return p


# ------------------------------------------------------------------ writing

def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    # executemany: batched by SQLAlchemy from one cached compilation (see replica.apply_changes)
    stmt = insert(table)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[table.c.code],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name in rows[0] and c.name != "code"}), rows)


def write(conn: sa.Connection, p: Plan) -> int:
    """Write a clean plan as one new metadata version; returns that version."""
    version = p.since + 1
    conn.execute(t.state.update().where(t.state.c.id == 1).values(version=version))
    for table, states in ((t.org_unit, p.org_units), (t.data_element, p.data_elements),
                          (t.data_set, p.data_sets), (t.validation_rule, p.validation_rules),
                          (t.focal_point, p.focal_points)):
        if states:
            _upsert(conn, table, [{**s, "version": version} for s in states.values()])
    for table, changed, rows in (
            (t.org_unit_link, p.links, [{"code": c, "parent": l.parent, "valid_from": l.valid_from,
                                         "valid_to": l.valid_to} for c, ls in p.links.items() for l in ls]),
            (t.org_unit_path, p.paths, [{"code": c, **x.as_state()} for c, xs in p.paths.items() for x in xs])):
        codes = sorted(changed)
        for i in range(0, len(codes), 1000):
            conn.execute(table.delete().where(table.c.code.in_(codes[i:i + 1000])))
        if rows:
            conn.execute(insert(table), rows)
    return version


def changes_payload(p: Plan, version: int, all_paths: dict[str, list[Path]]) -> dict:
    """The ``metadata_changed`` payload for a written plan."""
    return {
        "since": p.since,
        "version": version,
        "org_units": [{**s, "version": version,
                       "paths": [x.as_state() for x in all_paths.get(code, [])]}
                      for code, s in p.org_units.items()],
        "data_elements": [{**s, "version": version} for s in p.data_elements.values()],
        "data_sets": [{**s, "version": version} for s in p.data_sets.values()],
        "validation_rules": [{**s, "version": version} for s in p.validation_rules.values()],
        "focal_points": [{**s, "version": version} for s in p.focal_points.values()],
    }


def changes_since(conn: sa.Connection, since: int) -> dict:
    """Everything whose version is newer than ``since`` (a replica's catch-up)."""
    version = conn.execute(sa.select(t.state.c.version).where(t.state.c.id == 1)).scalar_one()

    def newer(table, skip=()):
        return [{k: v for k, v in r._mapping.items() if k not in skip}
                for r in conn.execute(sa.select(table).where(table.c.version > since))]

    units = newer(t.org_unit)
    paths: dict[str, list[dict]] = {}
    if units:
        codes = [u["code"] for u in units]
        for r in conn.execute(sa.select(t.org_unit_path).where(t.org_unit_path.c.code.in_(codes))
                              .order_by(t.org_unit_path.c.valid_from)):
            paths.setdefault(r.code, []).append(Path(r.path, r.level, r.valid_from, r.valid_to).as_state())
    return {
        "since": since,
        "version": version,
        "org_units": [{**u, "paths": paths.get(u["code"], [])} for u in units],
        "data_elements": newer(t.data_element),
        "data_sets": newer(t.data_set),
        "validation_rules": newer(t.validation_rule),
        "focal_points": newer(t.focal_point, skip=("last_active_at",)),
    }
