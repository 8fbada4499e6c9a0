import datetime as dt

import pytest

from shared.periods import Period, PeriodError, deadline, is_closed, on_time, show


@pytest.mark.parametrize("code, ptype, start, end", [
    ("202609", "Monthly", dt.date(2026, 9, 1), dt.date(2026, 9, 30)),
    ("202402", "Monthly", dt.date(2024, 2, 1), dt.date(2024, 2, 29)),
    ("2026Q3", "Quarterly", dt.date(2026, 7, 1), dt.date(2026, 9, 30)),
    ("2026Q4", "Quarterly", dt.date(2026, 10, 1), dt.date(2026, 12, 31)),
    ("2026", "Yearly", dt.date(2026, 1, 1), dt.date(2026, 12, 31)),
])
def test_parse(code, ptype, start, end):
    p = Period.parse(code)
    assert (p.type, p.start, p.end, p.code) == (ptype, start, end, code)


# other scripts' digits (Lao, fullwidth, Arabic-Indic) and a trailing newline: each was taken as
# a period under a code of its own, so one month was counted twice
@pytest.mark.parametrize("code", ["2026-09", "202613", "2026Q5", "26", "", "2026W1", "20260", "abc",
                                  "໒໐໒໖06", "２０２６06", "٢٠٢٦06", "202606\n", "2026Q\u0661", "໒໐໒໖"])
def test_malformed_periods_are_refused_with_the_value(code):
    with pytest.raises(PeriodError) as err:
        Period.parse(code)
    assert repr(code) in str(err.value)


@pytest.mark.parametrize("iso, code", [("2026-09-01/P1M", "202609"), ("2026-07-01/P3M", "2026Q3"),
                                       ("2026-01-01/P1Y", "2026")])
def test_adx_periods_round_trip(iso, code):
    assert Period.from_iso(iso).code == code
    assert Period.parse(code).to_iso() == iso


@pytest.mark.parametrize("iso", ["2026-09-15/P1M", "2026-08-01/P3M", "2026-09-01/P2W", "2026-09-01",
                                 "2026-09-01/P1M\n", "2026-09-01/P\u0661M", "0001-01-01/P1M"])
def test_bad_adx_periods(iso):
    with pytest.raises(PeriodError):
        Period.from_iso(iso)


def test_rolling_up():
    m = Period.parse("202608")
    assert m.rolls_up_to("Quarterly").code == "2026Q3"
    assert m.rolls_up_to("Yearly").code == "2026"
    assert Period.parse("2026Q3").contains(m) and not Period.parse("2026Q4").contains(m)
    assert m.previous().code == "202607" and Period.parse("202612").next().code == "202701"
    with pytest.raises(PeriodError):
        Period.parse("2026").rolls_up_to("Monthly")


def test_timeliness_is_judged_on_the_local_date_in_vientiane():
    p = Period.parse("202609")
    assert deadline(p, 15) == dt.date(2026, 10, 15)
    # 16:59 UTC on 15 Oct is 23:59 in Vientiane: still on time
    assert on_time(p, dt.datetime(2026, 10, 15, 16, 59, tzinfo=dt.timezone.utc), 15)
    # 17:00 UTC on 15 Oct is already 16 Oct in Vientiane: late
    assert not on_time(p, dt.datetime(2026, 10, 15, 17, 0, tzinfo=dt.timezone.utc), 15)


def test_expiry():
    p = Period.parse("202609")
    assert not is_closed(p, 0, dt.date(2030, 1, 1))  # 0: never closes
    assert not is_closed(p, 30, dt.date(2026, 10, 30))
    assert is_closed(p, 30, dt.date(2026, 10, 31))


def test_times_are_shown_in_vientiane():
    assert show(dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.timezone.utc)) == "2026-01-01T07:00:00+07:00"


def test_no_period_is_in_the_calendars_last_year():
    """Its next period, and the day after its end, would be no date (a 500 from completeness)."""
    for code in ("9999", "999912", "9999Q4"):
        with pytest.raises(PeriodError, match="after 9998"):
            Period.parse(code)
    with pytest.raises(PeriodError, match="after 9998"):
        Period.from_iso("9999-01-01/P1Y")
    assert Period.parse("9998Q4").next().code == "9999Q1"  # (as a next period: a date still)


@pytest.mark.parametrize("code, start, end", [
    ("202601B", "2026-01-01", "2026-02-28"), ("202606B", "2026-11-01", "2026-12-31"),
    ("2026S1", "2026-01-01", "2026-06-30"), ("2026S2", "2026-07-01", "2026-12-31"),
    ("2026AprilS1", "2026-04-01", "2026-09-30"), ("2026AprilS2", "2026-10-01", "2027-03-31"),
    ("2026April", "2026-04-01", "2027-03-31"), ("2026July", "2026-07-01", "2027-06-30"),
    ("2026Oct", "2026-10-01", "2027-09-30"),
])
def test_outputs_take_dhis2s_coarser_periods(code, start, end):
    """As DHIS2 names them (a financial year by the year it begins in); each is its own
    type's period of its days, and follows on from the one before."""
    p = Period.parse_output(code)
    assert (p.start.isoformat(), p.end.isoformat()) == (start, end)
    assert Period.containing(p.type, p.end) == p == Period.of(p.type, p.start)
    assert p.next().previous() == p and p.next().start == p.end_exclusive
    with pytest.raises(PeriodError):  # never a data set's: returns are refused them
        Period.parse(code)


def test_a_coarser_period_holds_the_months_and_quarters_that_fit_in_it():
    from shared.periods import fits

    s1 = Period.parse_output("2026AprilS2")
    assert {p.code for p in s1.and_finer()} == {"2026AprilS2", "202610", "202611", "202612", "202701",
                                                "202702", "202703", "2026Q4", "2027Q1"}
    assert fits("Quarterly", "FinancialJuly") and fits("Monthly", "BiMonthly")
    assert not fits("Quarterly", "BiMonthly") and not fits("Yearly", "FinancialApril")
    assert Period.parse_output("2026S2").sdmx() == "2026-S2"
    assert Period.parse_output("2026July").sdmx() == "2026-07-01/P1Y"
    assert Period.parse_output("202603B").sdmx() == "2026-05-01/P2M"


def test_weeks_and_days_are_named_finer_than_any_data():
    for code in ("2026W05", "20260105", "2026BiW1", "2026q1", "202607B"):
        with pytest.raises(PeriodError, match="finer than any data set"):
            Period.parse_output(code)
    with pytest.raises(PeriodError, match="outside"):
        Period.parse_output("1899S1")
    # the last year a data type's period may be in, an output's too (relative ones reach it)
    assert Period.parse_output("9998S2").end == dt.date(9998, 12, 31)
    assert Period.parse_output("9998Oct").end == dt.date(9999, 9, 30)
