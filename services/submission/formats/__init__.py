"""The import formats, each parsed into one internal shape (``RawReturn``).

Parsing only reads the format: it names each value's fields as sent and
reports what it cannot read. Whether the codes exist, the types fit and the
sender may send them is decided afterwards, once for all formats, by
``services.submission.intake.check``.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from shared.api import DEFAULT_ATTRIBUTE_COMBOS, ID_SCHEMES, STRATEGY_PARAMETERS, id_scheme_refusal
from shared.periods import Period, PeriodError, is_closed
from shared.values import shown


@dataclass
class RawValue:
    index: int                     # position in the body, for error messages
    data_element: object
    combo: object = None           # None: the element's only combo
    value: object = None
    comment: object = None
    period: object = None          # None: the return's period
    org_unit: object = None        # None: the return's org unit
    line: int | None = None        # CSV: the line it came from
    label: str | None = None       # ADX: its element, group[1].dataValue[2]
    # ADX: where its period was written and how (group[2].period, "2026-10-01/P3M"): a
    # problem with the period is told there, as sent, not as the code it was read as
    period_sent: tuple[str, str] | None = None
    org_unit_sent: str | None = None  # ADX: where its org unit was written (group[2].orgUnit)
    stored_by: object = None       # DHIS2's storedBy (JSON, CSV): who the value is from; else the sender
    followup: object = None        # DHIS2's followup (JSON, CSV): marked for a data-quality follow-up

    @property
    def where(self) -> str:
        """The value named in its own format's terms, as a sender finds it in what it sent."""
        if self.line is not None:
            return f"line {self.line}"
        return self.label or f"dataValues[{self.index}]"


@dataclass
class RawReturn:
    data_set: object = None
    period: object = None
    org_unit: object = None
    complete_date: object = None
    values: list[RawValue] = field(default_factory=list)
    infer_data_set: bool = False   # CSV without ?dataSet=: find the one that fits
    data_set_conflict: dict | None = None  # why none fits (listed with the file's other problems)
    # what the parser could read but not accept (an unknown field, a value with no value):
    # listed with every problem intake finds in the rest, not instead of them
    problems: list[dict] = field(default_factory=list)
    period_said: bool = False      # the return's period is unreadable, and problems say why
    period_sent: tuple[str, str] | None = None  # ADX: (group[1].period, as written), as RawValue's
    header_names: dict[str, str] = field(default_factory=dict)  # ADX: dataSet -> group[1].dataSet, ...
    delete: bool = False           # importStrategy=DELETE: every value it names is a deletion
    # CSV: every line names its own period and org unit (the return's are the first line's,
    # whose problems its line's checks name): a line without one is refused, never given
    # the first line's
    lines_name_places: bool = False


class ParseError(Exception):
    """The body can't be read as its format at all (not JSON, not XML, no CSV header);
    ``conflicts`` lists why. Problems inside a readable body go to ``RawReturn.problems``."""

    def __init__(self, conflicts: list[dict]):
        super().__init__("; ".join(c["message"] for c in conflicts))
        self.conflicts = conflicts


def conflict(obj: str, value, message: str) -> dict:
    # a value sent as a JSON object or list is echoed as the JSON it was, not as Python
    # (true and false too: Python would spell them True and False)
    try:
        text = None if value is None else json.dumps(value, ensure_ascii=False) \
            if isinstance(value, (dict, list, bool)) else str(value)
    except RecursionError:
        text = "(nested too deeply to show)"
    return {"object": obj, "value": None if text is None else shown(text), "message": message}


# DHIS2's import strategies: the default stores what is sent, DELETE deletes what is named.
# CREATE (new values only) and UPDATE (existing only) are refused, not taken as the default:
# a client asking for either means something the default would not do
STRATEGIES = {"CREATE_AND_UPDATE": False, "NEW_AND_UPDATES": False, "DELETE": True, "DELETES": True}


def id_scheme_problem(name: str, value) -> dict | None:
    refusal = id_scheme_refusal(name, value)
    return conflict(name, value, refusal) if refusal else None


def import_options(params: dict) -> bool:
    """DHIS2's import parameters statnet honours: True when ``importStrategy=DELETE``. An
    identifier scheme other than codes, or a strategy it does not do, is a 400 naming it
    (ignored, a client would be told its values were stored as it asked). The others
    (``async``: every return is; ``preheatCache``, ``skipExistingCheck``) change nothing."""
    problems = [p for p in (id_scheme_problem(n, params.get(n)) for n in ID_SCHEMES) if p]
    # DHIS2 takes ``strategy`` as another name for it (ImportOptions.setStrategy): ignored,
    # strategy=DELETE was a 202 that deleted nothing
    named = [n for n in STRATEGY_PARAMETERS if params.get(n) is not None]
    if len({str(params[n]).strip().upper() for n in named}) > 1:
        problems.append(conflict("strategy", params["strategy"], "strategy is DHIS2's other name for "
                                 f"importStrategy, which says {params['importStrategy']!r}: give one of them"))
    name = named[0] if named else "importStrategy"
    strategy = str(params.get(name) or "CREATE_AND_UPDATE").strip().upper()
    if strategy not in STRATEGIES:
        problems.append(conflict(name, params.get(name),
                                 f"{name} must be CREATE_AND_UPDATE (the default) or DELETE"))
    if problems:
        raise ParseError(problems)
    return STRATEGIES[strategy]


def complete_date_problem(obj: str, value) -> dict | None:
    """DHIS2's completeDate: a date, or a whole ISO 8601 timestamp (not "2026-11-28junk")."""
    if value in (None, ""):
        return None
    text = str(value)
    try:
        dt.date.fromisoformat(text) if len(text) <= 10 else dt.datetime.fromisoformat(text)
    except ValueError:
        return conflict(obj, value, f"completeDate {value!r} is not a date (YYYY-MM-DD)")
    return None


def attribute_combo_problem(obj: str, value) -> dict | None:
    """Any other attribute option combo (a partner, a funding source) is refused by name:
    statnet keeps none, and taken silently the values of several partners would be stored
    as one, each return overwriting the last (DHIS2: "attribute option combo not found")."""
    if value is None or (isinstance(value, str) and value in DEFAULT_ATTRIBUTE_COMBOS):
        return None
    return conflict(obj, value, f"unknown attribute option combo {value!r}: statnet keeps no attribute "
                                "option combos (partners, funding), so give none or 'default'")


class UnsupportedMediaType(Exception):
    pass


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


JSON, ADX, CSV = "application/json", "application/adx+xml", "text/csv"
# what DHIS2 clients also send for the same formats
ALIASES = {"application/csv": CSV, "application/xml+adx": ADX}


def parse(content_type: str | None, body: str, params: dict) -> RawReturn:
    from services.submission.formats import adx_format, csv_format, json_format

    kind = media_type(content_type)
    kind = ALIASES.get(kind, kind)
    if kind == JSON:
        raw = json_format.parse(body)
    elif kind == ADX:
        raw = adx_format.parse(body)
    elif kind == CSV:
        raw = csv_format.parse(body, params)
    else:
        raise UnsupportedMediaType(kind or "(none)")
    raw.delete = import_options(params)
    if raw.delete:  # what is named goes, whatever value it carries
        for v in raw.values:
            v.value = ""
    return raw


def infer_data_set(raw: RawReturn, md, today) -> None:
    """For a CSV without ?dataSet=: a data set holding every element, assigned to every
    unit, of the file's period type (an element may be in a monthly and a yearly data set).

    DHIS2 stores a CSV's values without asking for a data set, so a file that fits several
    is not refused: it goes to one still open for the file's periods (DHIS2 locks a value
    only once every data set holding it has closed), the one that fits it most closely
    (fewest elements beyond the file's), then the first by code; the return's status
    names the one chosen.
    """
    if not raw.infer_data_set:
        return
    # by the codes it knows: a code it does not is named as unknown, and was also answered
    # with "no data set holds every data element", which sent the sender to the wrong fix
    elements = {v.data_element for v in raw.values} & md.data_elements.keys()
    periods, places = set(), set()
    for v in raw.values:
        try:
            period = Period.parse(v.period)
        except (PeriodError, TypeError):
            continue  # intake names a bad period; it says nothing about the data set
        periods.add(period)
        if v.org_unit in md.org_units:
            # where the period begins for the unit, as intake judges it (a unit taken out of
            # a data set's list is still its for the periods begun before)
            places.add((v.org_unit, max(period.start, md.org_units[v.org_unit].opening_date)))
    types = {p.type for p in periods}
    candidates = sorted((any(is_closed(p, ds.expiry_days, today) for p in periods), len(ds.data_elements), ds.code)
                        for ds in md.data_sets.values()
                        if elements <= set(ds.data_elements) and types <= {ds.period_type}
                        and all(md.assigned(ds, u, day) for u, day in places))
    if candidates:
        raw.data_set = candidates[0][2]
        return
    # said as the dataSet conflict, beside every problem intake finds without a data set
    # (unknown codes, combos, value types, periods), not instead of them
    raw.data_set_conflict = conflict("dataSet", None, "no data set holds every data element of the file "
                                                      "for its org units and period type: name one with "
                                                      "?dataSet=")
