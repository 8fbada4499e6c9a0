"""Which periods the operators' completeness gauge follows: the one being reported (its
deadline ahead: returns still come in on time) and the latest whose deadline has passed,
the only one the completeness alert judges. Pure: no database."""
from __future__ import annotations

import datetime as dt

import pytest

from services.aggregation.completeness import gauge_periods


def _periods(ptype: str, timely: int, day: str, start: str | None = None) -> list[tuple[str, str]]:
    return [(p.code, deadline) for p, deadline in gauge_periods(
        ptype, timely, dt.date.fromisoformat(day), start and dt.date.fromisoformat(start))]


@pytest.mark.parametrize("day, expected", [
    # from the first of November, October's returns are coming in: September is judged
    ("2026-11-01", [("202610", "ahead"), ("202609", "passed")]),
    # the deadline day itself is still on time (notify calls a return late from the day after)
    ("2026-11-15", [("202610", "ahead"), ("202609", "passed")]),
    ("2026-11-16", [("202610", "passed")]),
    ("2026-11-30", [("202610", "passed")]),
])
def test_a_month_is_judged_from_the_day_after_its_deadline(day, expected):
    assert _periods("Monthly", 15, day) == expected


def test_without_timely_days_the_period_just_ended_is_judged_at_once():
    assert _periods("Monthly", 0, "2026-11-01") == [("202610", "passed")]


def test_a_window_longer_than_the_period_follows_the_latest_period_and_the_latest_judged():
    # monthly returns with 75 days' grace: October and September are both still open, the
    # gauge follows the newer; August is the latest judged
    assert _periods("Monthly", 75, "2026-11-25") == [("202610", "ahead"), ("202608", "passed")]


def test_a_year_across_new_year():
    assert _periods("Yearly", 30, "2026-01-10") == [("2025", "ahead"), ("2024", "passed")]
    assert _periods("Yearly", 30, "2026-02-01") == [("2025", "passed")]


def test_nothing_that_ended_before_go_live_is_followed():
    # live from 15 October: September went on paper, and is not judged at 0 %
    assert _periods("Monthly", 15, "2026-11-01", start="2026-10-15") == [("202610", "ahead")]
    # October (under way at go-live) is judged once its deadline passes
    assert _periods("Monthly", 15, "2026-11-16", start="2026-10-15") == [("202610", "passed")]
    # live from December: nothing yet, November's returns go on paper
    assert _periods("Monthly", 15, "2026-11-20", start="2026-12-01") == []


def test_a_rate_rounds_a_half_up_as_people_do():
    from services.aggregation.completeness import _rate

    assert _rate(26, 64) == 40.63  # 40.625: round() halved to even, 40.62
    assert (_rate(1, 3), _rate(2, 3), _rate(1, 8), _rate(0, 5), _rate(5, 5), _rate(1, 0)) == \
        (33.33, 66.67, 12.5, 0.0, 100.0, None)
