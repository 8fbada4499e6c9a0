"""ADX 1.0 (``application/adx+xml``), IHE QRPH's aggregate data exchange.

``<adx xmlns="urn:ihe:qrph:adx:2015"><group dataSet= orgUnit= period="2026-09-01/P1M">
<dataValue dataElement= categoryOptionCombo= value=/></group></adx>``, periods in
ADX's ISO 8601 form, a comment as ``<annotation>``. Several groups may come in
one message (units or periods of one data set); the first group is the
return's. ADX disaggregates with category attributes (``SEX="F"``); a single
such attribute whose value is one of the element's combos is read as that
combo (the combo is checked with the metadata later, like every other).

The parser refuses DTDs, entity declarations and external references
(defusedxml): a billion-laughs or XXE body is a 400, never an expansion.
"""
from __future__ import annotations

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import ParseError as XmlParseError
from defusedxml.ElementTree import fromstring

from services.submission.formats import (ParseError, RawReturn, RawValue, attribute_combo_problem,
                                         complete_date_problem, conflict)
from shared.periods import Period, PeriodError

NS = "urn:ihe:qrph:adx:2015"
VALUE_ATTRIBUTES = {"dataElement", "categoryOptionCombo", "value"}
GROUP_ATTRIBUTES = {"dataSet", "orgUnit", "period", "completeDate", "id", "attributeOptionCombo"}


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def _unknown_elements(parent, expected: str, where: str, rule: str) -> list[dict]:
    return [conflict(where, _local(child.tag)[1], f"unknown element <{_local(child.tag)[1]}> in {where}: {rule}")
            for child in parent if isinstance(child.tag, str) and _local(child.tag)[1] != expected]


def parse(body: str) -> RawReturn:
    try:
        # from the text, not its bytes: the gateway has decoded the body by its HTTP charset,
        # and an XML declaration saying another (encoding="ISO-8859-1" over UTF-8 bytes) would
        # have the parser decode it again, into mojibake
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        raise ParseError([conflict("body", None, f"XML with a DTD, entities or external references is "
                                                 f"refused ({type(exc).__name__})")]) from None
    except XmlParseError as exc:
        raise ParseError([conflict("body", None, f"body is not well-formed XML: {exc}")]) from None
    ns, name = _local(root.tag)
    if name != "adx" or ns not in (NS, None):
        raise ParseError([conflict("body", root.tag, f"root element must be <adx xmlns=\"{NS}\">")])
    problems, raw, index = [], RawReturn(), 0
    # an element the format has no place for is refused, not skipped: a <datavalue> or a
    # <gruop> typed by hand was dropped with its values, and the rest counted as the return
    problems += _unknown_elements(root, "group", "adx", "an <adx> message holds <group> elements")
    groups = [g for g in root if _local(g.tag)[1] == "group"]
    if not groups:
        problems.append(conflict("adx", None, "no <group> in the message"))
    for gi, group in enumerate(groups, 1):
        where = f"group[{gi}]"
        problems += _unknown_elements(group, "dataValue", where, "a <group> holds <dataValue> elements")
        data_set, org_unit, iso = group.get("dataSet"), group.get("orgUnit"), group.get("period")
        if gi > 1 and not (org_unit and iso):
            # the first group's unit or period is the return's, not every group's: a second
            # group without its own was stored under the first one's
            for key, given in (("orgUnit", org_unit), ("period", iso)):
                if not given:
                    problems.append(conflict(f"{where}.{key}", given, f"{where} names no {key}: every "
                                                                      f"group names its own"))
            continue
        try:
            period = Period.from_iso(iso).code if iso else None
        except PeriodError as exc:
            problems.append(conflict(f"{where}.period", iso, str(exc)))
            period = None
            if gi > 1:
                continue  # its values have no period to be judged by (said above)
        # ADX disaggregates a group by the data set's attribute categories (FUNDING="X"): an
        # attribute option combo by another name, and statnet keeps none
        for key in sorted(k for k in group.attrib if k not in GROUP_ATTRIBUTES and "}" not in k):
            problems.append(conflict(f"{where}.{key}", group.get(key),
                                     f"unknown attribute {key}={group.get(key)!r} on a group: statnet keeps no "
                                     f"attribute option combos (partners, funding); a group names only "
                                     f"{', '.join(sorted(GROUP_ATTRIBUTES))}"))
        if gi == 1:
            raw.data_set, raw.org_unit, raw.period = data_set, org_unit, period
            raw.complete_date = group.get("completeDate")
            raw.period_said = bool(iso) and period is None  # reported above, in ADX's own terms
            raw.period_sent = (f"{where}.period", iso) if iso else None
            raw.header_names = {key: f"{where}.{key}" for key in ("dataSet", "period", "orgUnit", "completeDate")}
        else:
            if data_set != raw.data_set and raw.data_set is not None:  # (group[1]'s missing one: said as the return's)
                problems.append(conflict(f"{where}.dataSet", data_set, f"every group of one return must be for "
                                                                       f"data set {raw.data_set!r}"))
            # group[1]'s is the return's, checked with its header; another group's was not read at all
            problem = complete_date_problem(f"{where}.completeDate", group.get("completeDate"))
            if problem:
                problems.append(problem)
        problem = attribute_combo_problem(f"{where}.attributeOptionCombo", group.get("attributeOptionCombo"))
        if problem:
            problems.append(problem)
        values = [dv for dv in group if _local(dv.tag)[1] == "dataValue"]
        for vi, dv in enumerate(values, 1):
            at = f"{where}.dataValue[{vi}]"  # counted like the groups, from 1, within its group
            problems += _unknown_elements(dv, "annotation", at, "a <dataValue> holds at most an <annotation>")
            combo = dv.get("categoryOptionCombo")
            categories = {k: v for k, v in dv.attrib.items() if k not in VALUE_ATTRIBUTES and "}" not in k}
            if "comment" in categories:  # read as a category otherwise, and refused as an unknown combo
                problems.append(conflict(f"{at}.comment", categories.pop("comment"),
                                         "ADX has no comment attribute: a comment goes in <annotation>"))
            for key in ("orgUnit", "period"):
                if key in categories:
                    problems.append(conflict(f"{at}.{key}", categories.pop(key),
                                             f"an ADX dataValue names no {key}: a value of another "
                                             f"{'org unit' if key == 'orgUnit' else 'period'} goes in a <group> "
                                             "of its own"))
            problem = attribute_combo_problem(f"{at}.attributeOptionCombo",
                                              categories.pop("attributeOptionCombo", None))
            if problem:
                problems.append(problem)
            if combo is not None and categories:  # beside the combo, a category is another dimension
                problems.append(conflict(f"{at}.{sorted(categories)[0]}", categories[sorted(categories)[0]],
                                         f"unknown attribute(s) {', '.join(sorted(categories))} beside "
                                         "categoryOptionCombo: statnet keeps no attribute option combos "
                                         "(partners, funding)"))
            if combo is None and len(categories) == 1:
                combo = next(iter(categories.values()))
            elif combo is None and len(categories) > 1:
                problems.append(conflict(at, None, f"categories {', '.join(sorted(categories))}: give the "
                                                   "statnet combo as categoryOptionCombo="))
            if "value" not in dv.attrib:
                problems.append(conflict(f"{at}.value", None, f"{at} has no value attribute"))
                continue
            comment = next((a.text for a in dv if _local(a.tag)[1] == "annotation"), None)
            raw.values.append(RawValue(index, dv.get("dataElement"), combo, dv.get("value"), comment,
                                       period if gi > 1 else None, org_unit if gi > 1 else None, label=at,
                                       period_sent=(f"{where}.period", iso) if gi > 1 else None,
                                       org_unit_sent=f"{where}.orgUnit" if gi > 1 else None))
            index += 1
    raw.problems = problems
    return raw
