"""``lastUpdated`` of a values export: a day, a time, an instant; a day at an offset is the
start of that day there (XML Schema's xs:date), never a time of day."""
from __future__ import annotations

import datetime as dt

import pytest

from services.aggregation.data_values import _moment

UTC = dt.timezone.utc


@pytest.mark.parametrize("raw, expected", [
    ("2026-11-29", dt.datetime(2026, 11, 28, 17, 0, tzinfo=UTC)),          # midnight in Vientiane
    ("2026-11-29+07:00", dt.datetime(2026, 11, 28, 17, 0, tzinfo=UTC)),    # was 07:00 in Vientiane
    ("2026-11-29-05:00", dt.datetime(2026, 11, 29, 5, 0, tzinfo=UTC)),     # was 05:00 in Vientiane
    ("2026-11-29+1530", dt.datetime(2026, 11, 28, 8, 30, tzinfo=UTC)),     # was 15:30 in Vientiane
    ("2026-11-29Z", dt.datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),          # was a 400
    ("2026-11-29T07:00+07:00", dt.datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),
    ("2026-11-29T07:00 07:00", dt.datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),  # '+' unescaped in a URL
    ("2026-11-29T07:00", dt.datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),
])
def test_a_moment_is_the_instant_it_names(raw, expected):
    problems = []
    assert _moment("lastUpdated", raw, problems) == expected and problems == []


@pytest.mark.parametrize("raw", ["2026-11-29+25:00", "2026-02-30", "yesterday", "2026-11-29T25:00"])
def test_what_is_not_a_moment_is_named_as_sent(raw):
    problems = []
    assert _moment("lastUpdated", raw, problems) is None
    assert problems == [f"lastUpdated: {raw!r} is not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS+07:00)"]
