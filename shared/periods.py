"""Periods as DHIS2 names them (``202609``, ``2026Q3``, ``2026``) and as ADX does
(``2026-09-01/P1M``, ``2026-07-01/P3M``, ``2026-01-01/P1Y``).

Data sets report by month, quarter or year (CONTRACT 3). Outputs (analytics,
completeness, validation results) also take DHIS2's coarser period types that months
and quarters roll into: bi-months (``202601B``: January-February), six-months
(``2026S1``; ``2026AprilS1``: April-September) and financial years (``2026April``,
``2026July``, ``2026Oct``: from that month of 2026 to the month before in 2027); a
province's six-monthly review of its plan reads ``2026S1`` (``Period.parse_output``).

A period is due at its end; a return is on time when received (local date in
Asia/Vientiane) no later than ``end + timelyDays``; the period closes for data
entry after ``end + expiryDays`` when ``expiryDays > 0``.
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

MONTHLY, QUARTERLY, YEARLY = "Monthly", "Quarterly", "Yearly"
BIMONTHLY, SIXMONTHLY, SIXMONTHLY_APRIL = "BiMonthly", "SixMonthly", "SixMonthlyApril"
FINANCIAL_APRIL, FINANCIAL_JULY, FINANCIAL_OCT = "FinancialApril", "FinancialJuly", "FinancialOct"
# the data types, finer to coarser; a period rolls up into any coarser type
ORDER = {MONTHLY: 0, QUARTERLY: 1, YEARLY: 2}
# every type: (months long, the month the year's first period of the type begins)
_SHAPE = {MONTHLY: (1, 1), BIMONTHLY: (2, 1), QUARTERLY: (3, 1), SIXMONTHLY: (6, 1), SIXMONTHLY_APRIL: (6, 4),
          YEARLY: (12, 1), FINANCIAL_APRIL: (12, 4), FINANCIAL_JULY: (12, 7), FINANCIAL_OCT: (12, 10)}
MONTHS_LONG = {ptype: months for ptype, (months, _) in _SHAPE.items()}
_FINANCIAL = {"April": FINANCIAL_APRIL, "July": FINANCIAL_JULY, "Oct": FINANCIAL_OCT}
_FINANCIAL_MONTH = {ptype: month for month, ptype in _FINANCIAL.items()}
_ISO_DURATION = {"P1M": MONTHLY, "P3M": QUARTERLY, "P1Y": YEARLY, "P12M": YEARLY}

# ASCII digits only, and the whole text (``$`` alone lets a trailing newline through): Python's
# \d is any script's digit, and "໒໐໒໖06" (Lao digits) was taken as June 2026 under a code
# of its own, a second period beside "202606" that counted the month twice
_PATTERNS = (
    (re.compile(r"(?P<y>\d{4})(?P<m>0[1-9]|1[0-2])", re.ASCII), MONTHLY),
    (re.compile(r"(?P<y>\d{4})Q(?P<q>[1-4])", re.ASCII), QUARTERLY),
    (re.compile(r"(?P<y>\d{4})", re.ASCII), YEARLY),
)
# the output types' codes: the year their first period of that year begins in, and its number
_OUTPUT_PATTERNS = (
    (re.compile(r"(?P<y>\d{4})(?P<n>0[1-6])B", re.ASCII), BIMONTHLY),
    (re.compile(r"(?P<y>\d{4})S(?P<n>[12])", re.ASCII), SIXMONTHLY),
    (re.compile(r"(?P<y>\d{4})AprilS(?P<n>[12])", re.ASCII), SIXMONTHLY_APRIL),
    (re.compile(r"(?P<y>\d{4})(?P<f>April|July|Oct)", re.ASCII), None),
)

LOCAL_TZ = ZoneInfo("Asia/Vientiane")
FIRST_YEAR = 1900  # no period begins earlier (history's SQL checks the same bound)
# nor ends later than 9998: a period's next, and the day after its end, are still dates
# (pe=9999 was a 500 from completeness and validationResults, "date value out of range")
LAST_YEAR = 9998


class PeriodError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Period:
    start: dt.date
    type: str
    code: str

    @property
    def end(self) -> dt.date:
        """Last day of the period (inclusive)."""
        year, month = self.start.year, self.start.month + MONTHS_LONG[self.type] - 1
        year += (month - 1) // 12
        month = (month - 1) % 12 + 1
        return dt.date(year, month, calendar.monthrange(year, month)[1])

    @property
    def end_exclusive(self) -> dt.date:
        return self.end + dt.timedelta(days=1)

    @classmethod
    def parse(cls, code: str) -> "Period":
        if not isinstance(code, str):
            raise PeriodError(f"period {code!r} is not a string")
        for pattern, ptype in _PATTERNS:
            m = pattern.fullmatch(code)
            if not m:
                continue
            year = int(m["y"])
            if year < FIRST_YEAR:
                raise PeriodError(f"period {code!r} is before {FIRST_YEAR}")
            if year > LAST_YEAR:
                raise PeriodError(f"period {code!r} is after {LAST_YEAR}")
            if ptype == MONTHLY:
                start = dt.date(year, int(m["m"]), 1)
            elif ptype == QUARTERLY:
                start = dt.date(year, 3 * int(m["q"]) - 2, 1)
            else:
                start = dt.date(year, 1, 1)
            return cls(start, ptype, code)
        raise PeriodError(f"period {code!r} is not a Monthly (YYYYMM), Quarterly (YYYYQn) "
                          "or Yearly (YYYY) period")

    @classmethod
    def parse_output(cls, code: str) -> "Period":
        """A period asked of the outputs: a data type's (``parse``), or one of the coarser
        types months and quarters roll into (the module's docstring)."""
        for pattern, ptype in _OUTPUT_PATTERNS:
            m = pattern.fullmatch(code) if isinstance(code, str) else None
            if not m:
                continue
            year = int(m["y"])
            if not FIRST_YEAR <= year <= LAST_YEAR:  # (9998Oct ends in 9999: still a date)
                raise PeriodError(f"period {code!r} is outside {FIRST_YEAR}-{LAST_YEAR}")
            ptype = ptype or _FINANCIAL[m["f"]]
            months, first = _SHAPE[ptype]
            month = first - 1 + (int(m.groupdict().get("n") or 1) - 1) * months  # since January of the year
            return cls(dt.date(year + month // 12, month % 12 + 1, 1), ptype, code)
        if isinstance(code, str) and not any(pattern.fullmatch(code) for pattern, _ in _PATTERNS):
            raise PeriodError(f"period {code!r} is not a Monthly (YYYYMM), BiMonthly (YYYYnnB), Quarterly "
                              "(YYYYQn), SixMonthly (YYYYSn, YYYYAprilSn), Yearly (YYYY) or financial year "
                              "(YYYYApril, YYYYJuly, YYYYOct) period (weeks and days are finer than any data "
                              "set's)")
        return cls.parse(code)  # (a data type's code: its own errors, of the years it may be in)

    @classmethod
    def of(cls, ptype: str, start: dt.date) -> "Period":
        """The period of the type beginning on ``start`` (a period's first day)."""
        if ptype == MONTHLY:
            return cls(start, ptype, f"{start.year}{start.month:02d}")
        if ptype == QUARTERLY:
            return cls(start, ptype, f"{start.year}Q{(start.month - 1) // 3 + 1}")
        if ptype == YEARLY:
            return cls(start, ptype, f"{start.year}")
        months, first = _SHAPE[ptype]
        # (the year its type's first period of the year began in, and its number from it)
        since = (start.month - first) % 12
        year = start.year - (start.month < first)
        n = since // months + 1
        code = {BIMONTHLY: f"{year}{n:02d}B", SIXMONTHLY: f"{year}S{n}", SIXMONTHLY_APRIL: f"{year}AprilS{n}"}.get(
            ptype) or f"{year}{_FINANCIAL_MONTH[ptype]}"
        return cls(start, ptype, code)

    @classmethod
    def containing(cls, ptype: str, day: dt.date) -> "Period":
        months, first = _SHAPE[ptype]
        index = day.year * 12 + day.month - first  # months since the type's first start in year 0
        index -= index % months
        index += first - 1
        return cls.of(ptype, dt.date(index // 12, index % 12 + 1, 1))

    @classmethod
    def from_iso(cls, value: str) -> "Period":
        """ADX's ISO 8601 form: ``<start date>/<duration>``."""
        m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})/(P\w+)", value or "", re.ASCII)
        if not m:
            raise PeriodError(f"period {value!r} is not an ADX period like 2026-09-01/P1M")
        try:
            start = dt.date.fromisoformat(m[1])
        except ValueError:
            raise PeriodError(f"period {value!r} has an invalid start date") from None
        if start.year < FIRST_YEAR:
            raise PeriodError(f"period {value!r} is before {FIRST_YEAR}")
        if start.year > LAST_YEAR:
            raise PeriodError(f"period {value!r} is after {LAST_YEAR}")
        ptype = _ISO_DURATION.get(m[2])
        if ptype is None:
            raise PeriodError(f"period {value!r}: duration {m[2]} is not P1M, P3M or P1Y")
        period = cls.of(ptype, start)
        if cls.containing(ptype, start).start != start:
            raise PeriodError(f"period {value!r} does not start on a {ptype.lower()} boundary")
        return period

    def to_iso(self) -> str:
        return f"{self.start.isoformat()}/{ {MONTHLY: 'P1M', QUARTERLY: 'P3M', YEARLY: 'P1Y'}[self.type]}"

    def sdmx(self) -> str:
        """SDMX TIME_PERIOD: 2026-09, 2026-Q3, 2026, 2026-S1; a period SDMX's reporting
        periods have no name for, as its time range (2026-07-01/P1Y, a financial year)."""
        if self.type == MONTHLY:
            return f"{self.start.year}-{self.start.month:02d}"
        if self.type == QUARTERLY:
            return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        if self.type == YEARLY:
            return f"{self.start.year}"
        if self.type == SIXMONTHLY:
            return f"{self.start.year}-S{(self.start.month - 1) // 6 + 1}"
        months = MONTHS_LONG[self.type]
        return f"{self.start.isoformat()}/{'P1Y' if months == 12 else f'P{months}M'}"

    def and_finer(self) -> list["Period"]:
        """This period and every data type's period inside it (a year: its quarters and
        months; ``2026S1``: two quarters and six months)."""
        out = [] if self.type in ORDER else [self]
        for ptype in ORDER:
            if fits(ptype, self.type):
                p = Period.containing(ptype, self.start)
                while p.start <= self.end:
                    out.append(p)
                    p = p.next()
        return out

    def contains(self, other: "Period") -> bool:
        return self.start <= other.start and other.end <= self.end

    def rolls_up_to(self, ptype: str) -> "Period":
        if ORDER[ptype] < ORDER[self.type]:
            raise PeriodError(f"a {self.type} period does not roll up to {ptype}")
        return Period.containing(ptype, self.start)

    def next(self) -> "Period":
        return Period.containing(self.type, self.end_exclusive)

    def previous(self) -> "Period":
        return Period.containing(self.type, self.start - dt.timedelta(days=1))

    def __str__(self) -> str:
        return self.code


def fits(inner: str, outer: str) -> bool:
    """Does every period of type ``inner`` lie inside one of type ``outer`` (a quarter in a
    six-month, not in a bi-month; a year only in a year)?"""
    (m_in, first_in), (m_out, first_out) = _SHAPE[inner], _SHAPE[outer]
    return m_out % m_in == 0 and (first_out - first_in) % m_in == 0


# DHIS2's relative periods, by what they count back from the period containing the
# anchor day (``relativePeriodDate``, default today): (type, first offset, how many).
# "LAST_n" ends before the current period, as in DHIS2 (a running month is not yet data).
_RELATIVE = {
    "THIS_MONTH": (MONTHLY, 0, 1), "LAST_MONTH": (MONTHLY, -1, 1),
    "LAST_3_MONTHS": (MONTHLY, -3, 3), "LAST_6_MONTHS": (MONTHLY, -6, 6),
    "LAST_12_MONTHS": (MONTHLY, -12, 12),
    "THIS_QUARTER": (QUARTERLY, 0, 1), "LAST_QUARTER": (QUARTERLY, -1, 1),
    "LAST_4_QUARTERS": (QUARTERLY, -4, 4),
    "THIS_YEAR": (YEARLY, 0, 1), "LAST_YEAR": (YEARLY, -1, 1),
    "LAST_5_YEARS": (YEARLY, -5, 5), "LAST_10_YEARS": (YEARLY, -10, 10),
    "THIS_BIMONTH": (BIMONTHLY, 0, 1), "LAST_BIMONTH": (BIMONTHLY, -1, 1), "LAST_6_BIMONTHS": (BIMONTHLY, -6, 6),
    "THIS_SIX_MONTH": (SIXMONTHLY, 0, 1), "LAST_SIX_MONTH": (SIXMONTHLY, -1, 1),
    "LAST_2_SIXMONTHS": (SIXMONTHLY, -2, 2),
}
# ... and the finer periods of the anchor's year or the one before, January first
_OF_YEAR = {"MONTHS_THIS_YEAR": (MONTHLY, 0), "QUARTERS_THIS_YEAR": (QUARTERLY, 0),
            "MONTHS_LAST_YEAR": (MONTHLY, -1), "QUARTERS_LAST_YEAR": (QUARTERLY, -1)}
RELATIVE_PERIODS = tuple(_RELATIVE) + tuple(_OF_YEAR)


def relative(keyword: str, day: dt.date) -> list[Period]:
    """The periods a DHIS2 relative period names on ``day``, oldest first."""
    if keyword in _OF_YEAR:
        ptype, back = _OF_YEAR[keyword]
        year = Period.of(YEARLY, dt.date(day.year + back, 1, 1))
        out, p = [], Period.containing(ptype, year.start)
        while p.start <= year.end:
            out.append(p)
            p = p.next()
        return out
    if keyword not in _RELATIVE:
        raise PeriodError(f"period {keyword!r} is not a relative period (one of "
                          f"{', '.join(RELATIVE_PERIODS)})")
    ptype, first, count = _RELATIVE[keyword]
    months = MONTHS_LONG[ptype]
    here = Period.containing(ptype, day).start
    out = []
    for n in range(first, first + count):
        index = here.year * 12 + here.month - 1 + n * months
        if index // 12 < FIRST_YEAR:
            raise PeriodError(f"period {keyword!r} as of {day.isoformat()} reaches before {FIRST_YEAR}")
        out.append(Period.of(ptype, dt.date(index // 12, index % 12 + 1, 1)))
    return out


def periods_named(code: str, day: dt.date) -> list[Period]:
    """A fixed period (``202609``) as itself, a relative one (``LAST_12_MONTHS``) as the
    periods it names on ``day``."""
    if isinstance(code, str) and (code in _RELATIVE or code in _OF_YEAR):
        return relative(code, day)
    try:
        return [Period.parse_output(code)]
    except PeriodError as exc:
        raise PeriodError(f"{exc}, nor a relative period such as LAST_12_MONTHS") from None


def parse_day(name: str, raw: str, any_year: bool = False) -> dt.date:
    """A query's date parameter: YYYY-MM-DD only (Python alone also reads 20261127), in
    the years periods are kept for, so a year either side still has codes and dates
    (``any_year``: a bound of a range, where 1900-01-01 means "from the start")."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw, re.ASCII):
            raise ValueError(raw)
        day = dt.date.fromisoformat(raw)
    except (TypeError, ValueError):
        raise PeriodError(f"{name}: {raw!r} is not a date (YYYY-MM-DD)") from None
    if not any_year and not FIRST_YEAR < day.year <= LAST_YEAR:
        raise PeriodError(f"{name}: {raw!r} is outside the years periods are kept for "
                          f"({FIRST_YEAR + 1}-{LAST_YEAR})")
    return day


def local_date(moment: dt.datetime) -> dt.date:
    """The calendar date in Asia/Vientiane of an aware instant."""
    return moment.astimezone(LOCAL_TZ).date()


def today() -> dt.date:
    return local_date(dt.datetime.now(dt.timezone.utc))


def on_time(period: Period, received_at: dt.datetime, timely_days: int) -> bool:
    return local_date(received_at) <= period.end + dt.timedelta(days=timely_days)


def deadline(period: Period, timely_days: int) -> dt.date:
    """Last day a return still counts as on time."""
    return period.end + dt.timedelta(days=timely_days)


def is_closed(period: Period, expiry_days: int, day: dt.date) -> bool:
    """True once ``day`` is more than ``expiry_days`` after the period's end (0 = never)."""
    return expiry_days > 0 and day > period.end + dt.timedelta(days=expiry_days)


def show(moment: dt.datetime | None) -> str | None:
    """An instant as users see it: ISO 8601 in Asia/Vientiane (storage is UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(LOCAL_TZ).isoformat()
