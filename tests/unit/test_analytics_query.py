"""An analytics query names every problem at once, and asks each item once."""
import pytest

from services.aggregation import analytics
from shared.api import ApiError
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
