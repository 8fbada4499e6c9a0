"""Periods as DHIS2 names them (``202609``, ``2026Q3``, ``2026``) and as ADX does
(``2026-09-01/P1M``, ``2026-07-01/P3M``, ``2026-01-01/P1Y``).

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
# finer to coarser; a period rolls up into any coarser type
ORDER = {MONTHLY: 0, QUARTERLY: 1, YEARLY: 2}
_MONTHS = {MONTHLY: 1, QUARTERLY: 3, YEARLY: 12}
_ISO_DURATION = {"P1M": MONTHLY, "P3M": QUARTERLY, "P1Y": YEARLY, "P12M": YEARLY}

_PATTERNS = (
    (re.compile(r"^(?P<y>\d{4})(?P<m>0[1-9]|1[0-2])$"), MONTHLY),
    (re.compile(r"^(?P<y>\d{4})Q(?P<q>[1-4])$"), QUARTERLY),
    (re.compile(r"^(?P<y>\d{4})$"), YEARLY),
)

LOCAL_TZ = ZoneInfo("Asia/Vientiane")
FIRST_YEAR = 1900  # no period begins earlier (history's SQL checks the same bound)


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
        year, month = self.start.year, self.start.month + _MONTHS[self.type] - 1
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
            m = pattern.match(code)
            if not m:
                continue
            year = int(m["y"])
            if year < FIRST_YEAR:
                raise PeriodError(f"period {code!r} is before {FIRST_YEAR}")
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
    def of(cls, ptype: str, start: dt.date) -> "Period":
        if ptype == MONTHLY:
            return cls(start, ptype, f"{start.year}{start.month:02d}")
        if ptype == QUARTERLY:
            return cls(start, ptype, f"{start.year}Q{(start.month - 1) // 3 + 1}")
        return cls(start, ptype, f"{start.year}")

    @classmethod
    def containing(cls, ptype: str, day: dt.date) -> "Period":
        month = {MONTHLY: day.month, QUARTERLY: 3 * ((day.month - 1) // 3) + 1, YEARLY: 1}[ptype]
        return cls.of(ptype, dt.date(day.year, month, 1))

    @classmethod
    def from_iso(cls, value: str) -> "Period":
        """ADX's ISO 8601 form: ``<start date>/<duration>``."""
        m = re.match(r"^(\d{4}-\d{2}-\d{2})/(P\w+)$", value or "")
        if not m:
            raise PeriodError(f"period {value!r} is not an ADX period like 2026-09-01/P1M")
        try:
            start = dt.date.fromisoformat(m[1])
        except ValueError:
            raise PeriodError(f"period {value!r} has an invalid start date") from None
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
        """SDMX TIME_PERIOD: 2026-09, 2026-Q3, 2026."""
        if self.type == MONTHLY:
            return f"{self.start.year}-{self.start.month:02d}"
        if self.type == QUARTERLY:
            return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        return f"{self.start.year}"

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
