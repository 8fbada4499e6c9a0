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
    030102 count as reported, on time, and stopped its late alert."""
    places = {(v["org_unit"], v["period"]) for v in data["values"]}
    return sorted(places or {(data["org_unit"], data["period"])})

