"""An analytics query names every problem at once, and asks each item once."""
import datetime as dt
from decimal import Decimal

import pytest

from services.aggregation import analytics
from shared.api import ApiError
from shared.auth import Principal
from shared.periods import Period, today
from shared.replica import DataElement, Metadata, OrgUnit, UnitPath
from tests.unit.test_exports import _md


def test_every_unknown_item_is_named_in_one_answer():
    with pytest.raises(ApiError) as refused:
        analytics.parse_query({"dx": "OPD;NOPE1;NOPE2;OPD.X", "ou": "03;NOWHERE", "pe": "2026;2026-13"}, _md())
    message = refused.value.body["message"]
    for part in ("'NOPE1'", "'NOPE2'", "no category option combo 'X'", "'NOWHERE'", "pe:"):
        assert part in message, (part, message)


def test_an_item_asked_twice_is_asked_once():
    q = analytics.parse_query({"dx": "OPD;OPD;MAL_POS", "ou": "03;03", "pe": "2026;2026;2026Q1"}, _md())
    assert [i.code for i in q.dx] == ["OPD", "MAL_POS"] and q.ou == ["03"]
    assert [p.code for p in q.pe] == ["2026", "2026Q1"]


# ------------------------------------------------------------ DHIS2's keywords

def _tree() -> Metadata:
    """LA > 03 > 0301 (V1, V2), 0302 (V3); V2 moved from 0301 to 0302 ten days ago, and
    V9 will move under 0301 in over a year (400 days: 365 from 1 January of a leap year is
    31 December of it): keywords read the hierarchy of the periods asked."""
    day, opened = today(), dt.date(1990, 1, 1)
    moved, later = day - dt.timedelta(days=10), day + dt.timedelta(days=400)

    def unit(code, *paths):
        return code, OrgUnit(code, f"Unit {code}", None, opened, None, False, tuple(paths))

    def at(path, start=opened, end=None):
        return UnitPath(path, path.count("/") - 1, start, end)

    units = dict([unit("LA", at("/LA/")), unit("03", at("/LA/03/")),
                  unit("0301", at("/LA/03/0301/")), unit("0302", at("/LA/03/0302/")),
                  unit("V1", at("/LA/03/0301/V1/")),
                  unit("V2", at("/LA/03/0301/V2/", opened, moved), at("/LA/03/0302/V2/", moved)),
                  unit("V3", at("/LA/03/0302/V3/")),
                  unit("V9", at("/LA/03/0302/V9/", opened, later), at("/LA/03/0301/V9/", later))])
    elements = {"OPD": DataElement("OPD", "Outpatients", None, "INTEGER", "SUM", ("default",))}
    return Metadata(1, units, elements, {}, {}, {})


def _ask(ou: str, pe: str = "2026", principal=None, **more):
    return analytics.parse_query({"dx": "OPD", "ou": ou, "pe": pe, **more}, _tree(), principal)


def test_relative_periods_name_the_periods_before_the_anchor_day():
    q = _ask("03", "LAST_3_MONTHS;THIS_QUARTER;202609", relativePeriodDate="2026-11-27")
    # oldest first, each once (202609 is both named and in the last three months)
    assert [p.code for p in q.pe] == ["202608", "202609", "202610", "2026Q4"]
    q = _ask("03", "LAST_4_QUARTERS;LAST_YEAR;MONTHS_THIS_YEAR", relativePeriodDate="2026-01-05")
    assert [p.code for p in q.pe][:5] == ["2025Q1", "2025Q2", "2025Q3", "2025Q4", "2025"]
    assert [p.code for p in q.pe][5:] == [f"2026{m:02d}" for m in range(1, 13)]
    # without an anchor, today (in Asia/Vientiane)
    assert [p.code for p in _ask("03", "THIS_YEAR").pe] == [str(today().year)]


def test_a_bad_relative_period_or_anchor_is_named():
    for pe, extra, words in (("LAST_13_MONTHS", {}, "'LAST_13_MONTHS'"),
                             ("LAST_MONTH", {"relativePeriodDate": "27/11/2026"}, "relativePeriodDate"),
                             ("LAST_MONTH", {"relativePeriodDate": "1900-02-01"}, "1901-9998"),
                             ("LAST_10_YEARS", {"relativePeriodDate": "1905-06-01"}, "before 1900")):
        with pytest.raises(ApiError) as refused:
            _ask("03", pe, **extra)
        assert refused.value.status == 400 and words in refused.value.body["message"], (pe, refused.value.body)


def _counted(q) -> dict[str, list[str]]:
    """The places whose values each unit's rows count: a keyword's unit, those it held there."""
    md = _tree()
    return {ou: q.paths(ou, md) for ou in q.ou}


def test_user_org_unit_keywords_follow_the_users_scope_in_the_periods_hierarchy():
    district = Principal("sup", "supervisor", "0302")
    assert _ask("USER_ORGUNIT", principal=district).ou == ["0302"]
    day = today()
    last_month = f"{(day.replace(day=1) - dt.timedelta(days=1)):%Y%m}"
    q = _ask("USER_ORGUNIT_CHILDREN", pe=f"{last_month};{day:%Y%m}", principal=district)
    # V2 is the district's child from its move on, with its values of its time there
    assert q.ou == ["V2", "V3", "V9"]
    assert _counted(q) == {"V2": ["/LA/03/0302/V2/"], "V3": ["/LA/03/0302/V3/"], "V9": ["/LA/03/0302/V9/"]}
    province = Principal("prov", "supervisor", "03")
    assert _ask("USER_ORGUNIT_GRANDCHILDREN", principal=province).ou == ["V1", "V2", "V3", "V9"]
    # the unscoped (an admin without an org unit) start at the roots
    assert _ask("USER_ORGUNIT;USER_ORGUNIT_CHILDREN", principal=Principal("root", "admin", None)).ou == ["LA", "03"]


def test_a_level_is_answered_inside_the_units_named_beside_it_or_the_users_root():
    # the year of the day before V2's move (ten days ago) had V2 in 0301 (its values of then
    # are 0301's); not always this year: from 1 to 11 January it moved on or before the 1st
    q = _ask("0301;LEVEL-4", pe=str((today() - dt.timedelta(days=11)).year))
    assert (q.ou, q.boundaries) == (["V1", "V2"], ["0301"])
    assert _counted(q) == {"V1": ["/LA/03/0301/V1/"], "V2": ["/LA/03/0301/V2/"]}
    q = _ask("0301;LEVEL-4", pe=str(today().year + 2))
    assert q.ou == ["V1", "V9"] and _counted(q)["V9"] == ["/LA/03/0301/V9/"]
    q = _ask("LEVEL-3", principal=Principal("prov", "supervisor", "03"))
    assert (q.ou, q.boundaries) == (["0301", "0302"], ["03"])
    assert _ask("LEVEL-3;LEVEL-2").ou == ["0301", "0302", "03"]
    for bad in ("LEVEL-0", "LEVEL-x", "LEVEL-"):
        with pytest.raises(ApiError) as refused:
            _ask(bad)
        assert repr(bad) in refused.value.body["message"]


def test_an_expansion_past_the_limits_is_refused_with_its_size(monkeypatch):
    monkeypatch.setattr(analytics, "MAX_PAIRS", 10)
    with pytest.raises(ApiError) as refused:
        _ask("LEVEL-4", "MONTHS_THIS_YEAR")
    assert "4 org units by 12 periods" in refused.value.body["message"]


def test_dhis2s_dimension_and_filter_spellings_read_as_the_plain_ones():
    params, filters = analytics.dhis2_params({"dimension": ["dx:OPD", "ou:03;LEVEL-3"], "filter": ["pe:THIS_YEAR"],
                                              "dx": ["OPD"], "skipMeta": ["true"]})
    assert params == {"dx": "OPD;OPD", "ou": "03;LEVEL-3", "pe": "THIS_YEAR", "skipMeta": "true"}
    assert filters == {"pe"}
    q = analytics.parse_query(params, _tree(), None, filters)
    assert q.ou == ["0301", "0302"] and len(q.pe) == 1 and q.filters == {"pe"}
    assert analytics.as_json([{"dx": "OPD", "ou": "0301", "pe": "2026", "value": Decimal(3)}], q.filters) == [
        {"dx": "OPD", "ou": "0301", "value": 3}]
    # a filter of several periods is one total over them (tests/integration/test_aggregation.py);
    # only if they overlap would a value count twice
    q = analytics.parse_query({"dx": "OPD", "ou": "03", "pe": "LAST_3_MONTHS"}, _tree(), None, frozenset({"pe"}))
    assert len(q.pe) == 3 and q.merged == {"pe"}
    with pytest.raises(ApiError) as refused:
        analytics.parse_query({"dx": "OPD", "ou": "03", "pe": "2026;202602;2026Q1"}, _tree(), None, frozenset({"pe"}))
    assert "2026Q1 and 2026" in refused.value.body["message"] and "202602" in refused.value.body["message"]
    with pytest.raises(ApiError) as refused:
        analytics.parse_query({"dx": "OPD;OPD.default", "ou": "03", "pe": "2026"}, _tree(), None, frozenset({"dx"}))
    assert "filter dx (2 items)" in refused.value.body["message"]
    with pytest.raises(ApiError) as refused:
        analytics.dhis2_params({"dimension": ["co"], "filter": ["xx:1"]})
    assert "'co'" in refused.value.body["message"] and "'xx:1'" in refused.value.body["message"]


def test_what_would_change_the_numbers_unsupported_is_refused_not_ignored():
    """aggregationType=AVERAGE was answered with the sum, measureCriteria with every row; a
    dimension asked also as a filter left the rows without it, or was refused as a filter of
    two items that the user never wrote."""
    for raw, words in (({"dx": "OPD", "aggregationType": "AVERAGE"}, "aggregationType: 'AVERAGE' is not supported"),
                       ({"dx": "OPD", "measureCriteria": "GT:1000"}, "measureCriteria: 'GT:1000'"),
                       ({"pe": "2026", "filter": ["pe:2026Q1"]}, "pe is asked both as a dimension and as a filter"),
                       ({"dimension": ["pe:2026"], "filter": ["pe:2026"]}, "pe is asked both")):
        with pytest.raises(ApiError) as err:
            analytics.dhis2_params(raw)
        assert err.value.status == 400 and words in err.value.body["message"], (raw, err.value.body)


def test_a_data_sets_reporting_rate_is_pointed_to_completeness():
    md = _md()
    with pytest.raises(ApiError) as refused:
        analytics.parse_query({"dx": "HEALTH_M.REPORTING_RATE", "ou": "03", "pe": "2026"}, md)
    assert "/api/completeness?ds=HEALTH_M" in refused.value.body["message"]


def test_an_alert_about_a_moved_village_is_its_districts_for_the_periods_it_was_there():
    from services.notify.service import NotifyService

    md, day = _tree(), today()
    before = Period.containing("Monthly", day - dt.timedelta(days=45)).code   # V2 still in 0301
    old, new = Principal("s1", "supervisor", "0301"), Principal("s2", "supervisor", "0302")
    assert NotifyService._about_in_scope(old, md, "V2", before)
    assert not NotifyService._about_in_scope(new, md, "V2", before)
    now = Period.containing("Yearly", day + dt.timedelta(days=400)).code      # long after the move
    assert NotifyService._about_in_scope(new, md, "V2", now) and not NotifyService._about_in_scope(old, md, "V2", now)


def test_a_unit_asked_by_its_code_beside_a_keyword_is_answered_whole():
    district = Principal("sup", "supervisor", "0302")
    q = _ask("V2;USER_ORGUNIT_CHILDREN", pe=str(today().year), principal=district)
    assert "V2" in q.ou and "V2" not in q.placed
    assert q.paths("V2", _tree()) == ["/LA/03/0301/V2/", "/LA/03/0302/V2/"]
