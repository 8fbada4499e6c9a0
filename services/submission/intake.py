"""The synchronous checks of a return (CONTRACT 4), the same for every format.

``check`` reads a parsed ``RawReturn`` against the service's metadata replica
and either returns a ``CheckedReturn`` (values normalised, ready to store and
publish) or raises ``Refused``:

* 400 with *every* problem listed (object, value, message): missing header
  fields, unknown codes, a value not of its element's type, an element not in
  the data set, a unit not assigned the data set or not open in the period,
  a malformed, mistyped or future period, a value given twice;
* 403 when a unit the body names is outside the sender's scope (checked first:
  whatever else is wrong with the body), or the period has closed (``expiryDays``).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from services.submission.formats import RawReturn, complete_date_problem, conflict
from shared.api import DEFAULT_COMBO_UID
from shared.auth import Principal
from shared.periods import Period, PeriodError, is_closed, local_date, on_time
from shared.replica import DataSet, Metadata
from shared.values import MAX_TEXT, ValueTypeError, normalise


class Refused(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(body.get("message"))
        self.status = status
        self.body = body


@dataclass
class CheckedReturn:
    data_set: DataSet
    period: Period
    org_unit: str
    values: list[dict]
    on_time: bool


def _text(value) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _followup(given) -> bool | None:
    """DHIS2's followup as JSON (a boolean) or CSV (its text) gives it; None: neither."""
    if given is None or isinstance(given, bool):
        return bool(given)
    if isinstance(given, str) and given.strip().lower() in ("", "true", "false"):
        return given.strip().lower() == "true"
    return None


def _absent(obj: str, value) -> str:
    """Why a code that should be text is not usable: missing, or not text at all."""
    return f"{obj} is missing" if value in (None, "") else f"{obj} must be text, not {value!r}"


def check(raw: RawReturn, md: Metadata, principal: Principal, received_at: dt.datetime) -> CheckedReturn:
    conflicts: list[dict] = list(raw.problems)  # the parser's, then everything found here
    today = local_date(received_at)

    # the header's fields by the names the sender's format gives them (ADX: group[1].orgUnit)
    named_as = {key: raw.header_names.get(key, key) for key in ("dataSet", "period", "orgUnit", "completeDate")}
    ds = None
    if _text(raw.data_set) is None:
        conflicts.append(raw.data_set_conflict or conflict(named_as["dataSet"], raw.data_set,
                                                           _absent(named_as["dataSet"], raw.data_set)))
    else:
        ds = md.data_sets.get(raw.data_set)
        if ds is None:
            conflicts.append(conflict(named_as["dataSet"], raw.data_set, f"unknown data set {raw.data_set!r}"))

    def read_period(obj: str, code, sent: tuple[str, str] | None = None) -> Period | None:
        """``sent``: where and how an ADX period was written, which its problems are told by"""
        if _text(code) is None:
            conflicts.append(conflict(obj, code, _absent(obj, code)))
            return None
        try:
            period = Period.parse(code)
        except PeriodError as exc:
            conflicts.append(conflict(obj, code, str(exc)))
            return None
        shown = f"{sent[1]!r} ({code})" if sent else repr(code)
        obj, value = sent if sent else (obj, code)
        if ds is not None and period.type != ds.period_type:
            conflicts.append(conflict(obj, value, f"period {shown} is {period.type}, but data set "
                                                  f"{ds.code!r} is {ds.period_type}"))
            return None
        if period.start > today:
            conflicts.append(conflict(obj, value, f"period {shown} is in the future"))
            return None
        return period

    named: set[str] = set()  # every known unit the body names, for the scope check

    def read_unit(obj: str, code) -> str | None:
        if _text(code) is None:
            conflicts.append(conflict(obj, code, _absent(obj, code)))
            return None
        if code not in md.org_units:
            conflicts.append(conflict(obj, code, f"unknown org unit {code!r}"))
            return None
        named.add(code)
        return code

    header_checked = len(conflicts)
    period = None if raw.period_said else read_period(named_as["period"], raw.period, raw.period_sent)
    org_unit = read_unit(named_as["orgUnit"], raw.org_unit)
    if raw.lines_name_places:
        del conflicts[header_checked:]  # the first line's own: said below by its line, once
        if not raw.values:
            conflicts.append(conflict("body", None, "the file has a header row and no data lines"))
    problem = complete_date_problem(named_as["completeDate"], raw.complete_date)
    if problem:
        conflicts.append(problem)

    values: list[dict] = []
    seen: dict[tuple, int] = {}
    # each (unit, period) the return reports for, and where the body first named it: a place
    # a value's own orgUnit brought in is refused under that value's name, not the header's
    places: dict[tuple[str, Period], str] = {}
    for v in raw.values:
        at = v.where
        ok = True
        de = None
        if _text(v.data_element) is None:
            conflicts.append(conflict(f"{at}.dataElement", v.data_element,
                                      f"{at} has no dataElement" if v.data_element in (None, "")
                                      else _absent(f"{at}.dataElement", v.data_element)))
            ok = False
        else:
            de = md.data_elements.get(v.data_element)
            if de is None:
                conflicts.append(conflict(f"{at}.dataElement", v.data_element,
                                          f"unknown data element {v.data_element!r}"))
                ok = False
            elif ds is not None and de.code not in ds.data_elements:
                conflicts.append(conflict(f"{at}.dataElement", v.data_element,
                                          f"data element {de.code!r} is not in data set {ds.code!r}"))
                ok = False
        combo = v.combo
        if de is not None:
            if _text(combo) is None:
                if len(de.combos) == 1:
                    combo = de.combos[0]
                else:
                    conflicts.append(conflict(f"{at}.categoryOptionCombo", combo,
                                              f"categoryOptionCombo is required for {de.code!r} "
                                              f"(one of {', '.join(de.combos)})"))
                    ok = False
            elif combo == DEFAULT_COMBO_UID and "default" in de.combos:
                combo = "default"
            elif combo not in de.combos:
                conflicts.append(conflict(f"{at}.categoryOptionCombo", combo,
                                          f"unknown category option combo {combo!r} for data element "
                                          f"{de.code!r} (one of {', '.join(de.combos)})"))
                ok = False
        if raw.lines_name_places:  # each line its own: a blank one is missing, not the first line's
            value_period = read_period(f"{at}.period", v.period)
            value_unit = read_unit(f"{at}.orgUnit", v.org_unit)
        else:
            value_period = period if v.period in (None, "") else read_period(f"{at}.period", v.period,
                                                                                 v.period_sent)
            # an ADX group's unit is told once, where it was written (group[2].orgUnit)
            value_unit = org_unit if v.org_unit in (None, "") else read_unit(v.org_unit_sent or f"{at}.orgUnit",
                                                                             v.org_unit)
        if value_period is not None and value_unit is not None:
            # the place is checked below (assigned, open, in scope) whatever else is wrong
            # with the value: every problem at once (a bad value hid "not assigned" until fixed)
            places.setdefault((value_unit, value_period), named_as["orgUnit"] if v.org_unit in (None, "")
                              else v.org_unit_sent or f"{at}.orgUnit")
        else:
            ok = False
        text = None
        if de is not None:
            try:
                text = normalise(de.value_type, v.value)
            except ValueTypeError as exc:
                conflicts.append(conflict(f"{at}.value", v.value, f"{de.code}: {exc}"))
                ok = False
        for name, given in (("comment", v.comment), ("storedBy", v.stored_by)):
            if given is not None and not isinstance(given, str):
                conflicts.append(conflict(f"{at}.{name}", given, f"{name} must be text"))
                ok = False
            elif given is not None and len(given) > MAX_TEXT:  # DHIS2's bound on a comment too
                conflicts.append(conflict(f"{at}.{name}", given,
                                          f"{name} of {len(given)} characters is longer than {MAX_TEXT}"))
                ok = False
        followup = _followup(v.followup)
        if followup is None:
            conflicts.append(conflict(f"{at}.followup", v.followup, "followup must be true or false"))
            ok = False
        if not ok:
            continue
        key = (de.code, combo, value_unit, value_period.code)
        if key in seen:
            conflicts.append(conflict(at, None, f"{de.code}.{combo} for {value_unit} {value_period.code} "
                                                f"is given twice (also {seen[key]})"))
            continue
        seen[key] = v.where
        value = {"data_element": de.code, "category_option_combo": combo, "org_unit": value_unit,
                 "period": value_period.code, "value": text,
                 # a comment of spaces alone says nothing: none, as an empty one is (DHIS2 trims
                 # a comment to null); any other is kept as sent, spaces and all
                 "comment": v.comment if v.comment is None or v.comment.strip() else None}
        # who the value is from, as DHIS2 keeps it (an export sent back keeps its storedBy);
        # absent, the sender, as before: most values have none, and carry no key for it
        stored_by = v.stored_by.strip() if isinstance(v.stored_by, str) else None
        if stored_by:
            value["stored_by"] = stored_by
        if followup:  # DHIS2's mark for a data-quality follow-up (a few values in a thousand)
            value["followup"] = True
        values.append(value)

    if ds is not None and org_unit is not None and period is not None and not raw.lines_name_places:
        places[(org_unit, period)] = named_as["orgUnit"]
    for (unit, p), named_at in sorted(places.items(), key=lambda x: (x[0][0], x[0][1].code)):
        if ds is None:
            break
        # assigned (by level) where the unit sat when the period began for it: at its
        # opening, if it opened during the period (completeness and deadlines read it so)
        if not md.assigned(ds, unit, max(p.start, md.org_units[unit].opening_date)):
            conflicts.append(conflict(named_at, unit, f"org unit {unit!r} is not assigned data set {ds.code!r}"))
        elif not md.org_units[unit].open_during(p):
            conflicts.append(conflict(named_at, unit, f"org unit {unit!r} is not open in period {p.code}"))
    if (ds is not None and org_unit is not None and period is None and not raw.lines_name_places
            and not md.assigned(ds, org_unit)):
        # the period could not be read: still say whether the unit may send this data set at all
        conflicts.append(conflict(named_as["orgUnit"], org_unit,
                                  f"org unit {org_unit!r} is not assigned data set {ds.code!r}"))
    # who may send for these units before what is wrong with the body: a sender outside
    # its scope hears 403 whatever else the body holds (and learns nothing of the data set)
    def held_then(unit: str) -> bool:  # one of the unit's periods here was in the sender's subtree
        return not principal.unscoped and any(
            u == unit and md.in_subtree(u, p.start, p.end, principal.org_unit) for u, p in places)

    for unit in sorted(named):
        if not principal.covers_path(md.current_path(unit)) and not held_then(unit):
            raise Refused(403, {"status": "ERROR", "httpStatusCode": 403,
                                "message": f"org unit {unit!r} is outside the scope of user "
                                           f"{principal.username!r} (subtree of {principal.org_unit!r})"})
    # and for each period, whose data it is: where the unit was on its first day (there it
    # counts, in every aggregate), to write as to correct. The new district writes from
    # the first period that began after the move; the month of a move on the 15th is the
    # old district's (the new one could overwrite a value counted in the old one's total)
    if not principal.unscoped:
        for unit, p in sorted(places, key=lambda x: (x[0], x[1].code)):
            unit_now = md.org_units[unit].current
            if not md.in_subtree(unit, p.start, p.end, principal.org_unit):
                raise Refused(403, {"status": "ERROR", "httpStatusCode": 403,
                                    "message": f"org unit {unit!r} in period {p.code} is outside the scope of "
                                               f"user {principal.username!r} (subtree of {principal.org_unit!r}): "
                                               f"its data of {p.code} belongs where it was then, "
                                               f"{md.period_path(unit, p.start, p.end)}, "
                                               f"and it is under {unit_now.path} from {unit_now.valid_from}"})
    # once each: a group's period is every value's of the group, and was told once per value
    conflicts = list({(c["object"], c["value"], c["message"]): c for c in conflicts}.values())
    if conflicts:
        raise Refused(400, {"status": "ERROR", "httpStatusCode": 400,
                            "message": f"{len(conflicts)} conflict(s): nothing was stored",
                            "conflicts": conflicts})

    for p in sorted({p for _, p in places}):
        if is_closed(p, ds.expiry_days, today):
            raise Refused(403, {"status": "ERROR", "httpStatusCode": 403,
                                "message": f"period closed: data set {ds.code!r} accepts data for {p.code} "
                                           f"until {p.end + dt.timedelta(days=ds.expiry_days)}"})
    return CheckedReturn(ds, period, org_unit, values, on_time(period, received_at, ds.timely_days))
