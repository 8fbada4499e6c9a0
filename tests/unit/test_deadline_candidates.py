"""Which (data set, period) pairs a deadline check looks at: late from the day after the
deadline (the period's end plus timelyDays) for the look-back, reminders before the due
date. Pure: no database."""
from __future__ import annotations

import datetime as dt

import pytest

from services.notify.deadlines import LATE, REMINDER, candidates
from tests.support.metadata import data_set, snapshot


def _late(timely: int, as_of: str, lookback: int = 60, period_type: str = "Quarterly") -> list[str]:
    md = snapshot({"LA": None}, data_sets=[data_set("DS", [], period_type=period_type, timely=timely)])
    return [c.period.code for c in candidates(md, dt.date.fromisoformat(as_of), lookback, 3) if c.kind == LATE]


@pytest.mark.parametrize("timely", [0, 59, 70, 200])
def test_a_period_is_late_from_the_day_after_its_deadline_for_the_whole_look_back(timely):
    # 2026Q1 ends on March 31: its deadline is timelyDays later. Counted from the period's end,
    # a data set with timelyDays 70 against a look-back of 60 was never late, and 59 on one day
    deadline = dt.date(2026, 3, 31) + dt.timedelta(days=timely)
    assert "2026Q1" not in _late(timely, deadline.isoformat())
    for after in (1, 30, 60):
        assert "2026Q1" in _late(timely, (deadline + dt.timedelta(days=after)).isoformat()), after
    assert "2026Q1" not in _late(timely, (deadline + dt.timedelta(days=61)).isoformat())


def test_reminders_come_before_the_due_date_only():
    md = snapshot({"LA": None}, data_sets=[data_set("DS", [], period_type="Monthly", timely=10)])
    due = {c.period.code: c.kind for c in candidates(md, dt.date(2026, 11, 28), 60, 3)}
    assert due["202611"] == REMINDER and due["202609"] == LATE and "202612" not in due


def test_with_a_reporting_start_no_period_that_ended_before_it_is_chased():
    """Live from 15 September: September, under way that day, is the first month chased;
    the year of look-back before it went on paper."""
    md = snapshot({"LA": None}, data_sets=[data_set("DS", [], period_type="Monthly", timely=10)])
    as_of = dt.date(2026, 11, 28)
    before = {c.period.code: c.kind for c in candidates(md, as_of, 400, 3)}
    assert "202510" in before and before["202610"] == LATE
    after = {c.period.code: c.kind for c in candidates(md, as_of, 400, 3, start=dt.date(2026, 9, 15))}
    assert after == {"202609": LATE, "202610": LATE, "202611": REMINDER}
    # a start in the future chases nothing yet, and still reminds of what comes after it
    assert {c.period.code: c.kind for c in candidates(md, as_of, 400, 3, start=dt.date(2026, 11, 1))} == \
        {"202611": REMINDER}
