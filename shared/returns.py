"""What an accepted return reports for, read the same way by every service that counts it.

A return names one org unit and period in its header, and each value may name its own
(CONTRACT 4: "a value's own period/orgUnit override the header's"). A district statistics
centre's CSV of all its villages for a month, or an ADX file of several groups, is one
return that reports for every one of those (unit, period) places: each counts as reported
for completeness, stops the deadline check chasing it and is its unit's last submission,
not only the place its first line happened to name. A header that no value names is
not one of them (it is still whose return it is, for reading it back).
"""
from __future__ import annotations


def reported_places(data: dict) -> list[tuple[str, str]]:
    """(org unit, period) of each of the return's values, sorted; the header's alone for a
    return with no values (a unit saying it had nothing to report). A header no value
    names reports nothing: a return headed 030102 whose values are all 030101's made
    030102 count as reported, on time, and stopped its late alert. Nor does a place whose
    every value is a deletion (`""`, or importStrategy=DELETE): taking data back is no
    report (DHIS2 registers none for it), and a deletion of nothing stored made a district
    count as reported, stopped its late alert and became its last submission."""
    if not data["values"]:
        return [(data["org_unit"], data["period"])]
    return sorted({(v["org_unit"], v["period"]) for v in data["values"] if v["value"] != ""})


def named_places(data: dict) -> list[tuple[str, str]]:
    """Every (org unit, period) the return's values name, deletions too, or its header's
    for none: whose return it is to read, and what validation judges."""
    places = {(v["org_unit"], v["period"]) for v in data["values"]}
    return sorted(places or {(data["org_unit"], data["period"])})

