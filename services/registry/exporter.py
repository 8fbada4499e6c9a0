"""``GET /api/metadata``: the registry's metadata as the document ``POST /api/metadata`` takes.

What DHIS2's metadata export is for: an integrator reads the data sets, elements and
units it must report against; an admin keeps a copy, or moves it to another server.
Posted back as it stands it changes nothing (every object ``ignored``): the document
is the import shape, field for field, nothing more.

A unit's ``parent`` is its latest one; a unit that moved (or will) also carries its
``hierarchy``, every parent with its dates as ``GET /api/orgUnits/{code}`` lists them, which
the import takes as the unit's whole timeline: posted into an empty server, a moved village
keeps its earlier periods with its old district, as here.

Admins and operators get everything. A supervisor or reporter gets every data element,
data set and rule (what its units report against), but only the org units of its own
subtree (as they sit today), their focal points, and data set assignments inside it.
"""
from __future__ import annotations

import sqlalchemy as sa

from services.registry.importer import DEFAULT_COMBO, load_registry, load_paths
from shared.api import ApiError, error, flag
from shared.periods import today

LISTS = ("orgUnits", "dataElements", "dataSets", "validationRules", "focalPoints")


def _iso(day):
    return day.isoformat() if day else None


def _asked(params: dict) -> list[str]:
    """The lists asked by DHIS2's switches (``?dataSets=true&dataElements=true``); all when none."""
    problems, asked = [], []
    for name in LISTS:
        try:
            if flag(params, name):
                asked.append(name)
        except ApiError as exc:  # flag's 400 names the switch
            problems.append(exc.body["message"])
    unknown = sorted(set(params) - set(LISTS))
    if unknown:
        problems.append(f"unknown parameter(s) {', '.join(unknown)}: the lists are {', '.join(LISTS)}")
    if problems:
        raise error(400, "; ".join(problems))
    return asked or list(LISTS)


def document(conn: sa.Connection, principal, params: dict) -> dict:
    asked = _asked(params)
    reg = load_registry(conn)
    day = today()
    current = {}
    for code, paths in load_paths(conn).items():
        where = next((p for p in paths if p.valid_from <= day and (p.valid_to is None or day < p.valid_to)),
                     max(paths, key=lambda p: p.valid_from))
        current[code] = where.path
    visible = {code for code in reg.org_units if principal.covers_path(current.get(code))}
    doc = {}
    if "orgUnits" in asked:
        units = []
        for code in sorted(visible, key=lambda c: (current.get(c, "").count("/"), c)):
            u, links = reg.org_units[code], reg.links.get(code, [])
            item = {"code": code, "name": u["name"], "nameLo": u["name_lo"],
                    "parent": links[-1].parent if links else None,
                    "openingDate": _iso(u["opening_date"]), "closedDate": _iso(u["closed_date"])}
            if [(link.valid_from, link.valid_to) for link in links] != [(u["opening_date"], None)]:
                # moved (or to move), or placed later than it opened: every parent, so that a
                # new server places its earlier periods where this one does
                item["hierarchy"] = [{"parent": link.parent, "from": _iso(link.valid_from), "to": _iso(link.valid_to)}
                                     for link in links]
            if u["generated"]:
                item["generated"] = True
            units.append(item)
        doc["orgUnits"] = units
    if "dataElements" in asked:
        elements = []
        for code, de in sorted(reg.data_elements.items()):
            item = {"code": code, "name": de["name"], "nameLo": de["name_lo"], "valueType": de["value_type"],
                    "aggregationType": de["aggregation_type"]}
            if list(de["combos"]) != [DEFAULT_COMBO]:
                item["disaggregation"] = list(de["combos"])
            outliers = dict(de.get("outliers") or {})
            if outliers and outliers != {"enabled": True}:
                item["outliers"] = {"enabled": outliers.get("enabled", True), "min": outliers.get("min"),
                                    "max": outliers.get("max")}
            elements.append(item)
        doc["dataElements"] = elements
    if "dataSets" in asked:
        doc["dataSets"] = [
            {"code": code, "name": ds["name"], "nameLo": ds["name_lo"], "periodType": ds["period_type"],
             "dataElements": list(ds["data_elements"]), "orgUnitLevel": ds["org_unit_level"],
             "orgUnits": sorted(c for c in ds["org_units"] if c in visible),
             "timelyDays": ds["timely_days"], "expiryDays": ds["expiry_days"]}
            for code, ds in sorted(reg.data_sets.items())]
    if "validationRules" in asked:
        doc["validationRules"] = [
            {"code": code, "name": r["name"], "nameLo": r["name_lo"], "importance": r["importance"],
             "left": r["left"], "operator": r["operator"], "right": r["right"],
             "missingValueStrategy": r["missing_value_strategy"], "dataSet": r["data_set"]}
            for code, r in sorted(reg.validation_rules.items())]
    if "focalPoints" in asked:
        doc["focalPoints"] = [
            {"code": code, "name": fp["name"], "orgUnit": fp["org_unit"], "role": fp["role"],
             "email": fp["email"], "phone": fp["phone"], "language": fp["language"], "digest": fp["digest"]}
            for code, fp in sorted(reg.focal_points.items())
            # (one retired is no part of the metadata: posted back, the export leaves it retired)
            if fp["org_unit"] in visible and fp.get("retired_on") is None]
    return doc
