"""SDMX-CSV: each observation names the dataflow (data set) of its own data element."""
import csv
import datetime as dt
import io

import pytest

from services.aggregation import exports
from shared.api import ApiError
from shared.replica import DataElement, DataSet, Metadata, OrgUnit, UnitPath


def _md() -> Metadata:
    unit = OrgUnit("03", "Luang Namtha", "ຫຼວງນ້ຳທາ", dt.date(1990, 1, 1), None, False,
                   (UnitPath("/LA/03/", 2, dt.date(1990, 1, 1), None),))
    elements = {code: DataElement(code, code.title(), None, "INTEGER", "SUM", ("default",))
                for code in ("OPD", "MAL_POS", "PRICE_RICE", "ORPHAN")}
    data_sets = {
        "HEALTH_M": DataSet("HEALTH_M", "Health", "ສາທາລະນະສຸກ", "Monthly", ("OPD", "MAL_POS"), 3,
                            frozenset(), 10, 0),
        "PRICES_M": DataSet("PRICES_M", "Prices", None, "Monthly", ("PRICE_RICE",), 3, frozenset(), 10, 0),
    }
    return Metadata(1, {"03": unit}, elements, data_sets, {}, {})


def test_each_observation_names_its_own_data_set():
    md = _md()
    flows = exports.dataflows_for({}, ["OPD", "PRICE_RICE", "MAL_POS"], md)
    assert {e: flows[(e, None)] for e in ("OPD", "PRICE_RICE", "MAL_POS")} == {
        "OPD": "HEALTH_M", "PRICE_RICE": "PRICES_M", "MAL_POS": "HEALTH_M"}
    rows = [{"dx": "OPD", "ou": "03", "pe": "202610", "value": 5},
            {"dx": "PRICE_RICE", "ou": "03", "pe": "202610", "value": 12000.5}]
    table = list(csv.DictReader(io.StringIO(exports.sdmx_csv(rows, md, flows))))
    assert [(r["DATAFLOW"], r["DATA_ELEMENT"], r["TIME_PERIOD"]) for r in table] == [
        ("STATNET:HEALTH_M(1.0)", "OPD", "2026-10"), ("STATNET:PRICES_M(1.0)", "PRICE_RICE", "2026-10")]
    lao = exports.sdmx_csv(rows, md, flows, labels="both", lang="lo")
    assert "STATNET:HEALTH_M(1.0): ສາທາລະນະສຸກ" in lao and "STATNET:PRICES_M(1.0): Prices" in lao


def test_a_named_data_set_covers_every_element_or_is_refused():
    md = _md()
    assert exports.dataflows_for({"ds": "HEALTH_M"}, ["OPD", "MAL_POS"], md) == {("OPD", None): "HEALTH_M",
                                                                               ("MAL_POS", None): "HEALTH_M"}
    with pytest.raises(ApiError) as refused:
        exports.dataflows_for({"ds": "HEALTH_M"}, ["OPD", "PRICE_RICE"], md)
    assert "PRICE_RICE" in refused.value.body["message"]
    # an element no data set holds any more goes with the data set holding most of the others
    flows = exports.dataflows_for({}, ["ORPHAN", "OPD"], md)
    assert (flows[("ORPHAN", None)], flows[("OPD", None)]) == ("HEALTH_M", "HEALTH_M")
    with pytest.raises(ApiError):
        exports.dataflows_for({}, ["ORPHAN"], md)


def test_an_element_in_a_monthly_and_a_yearly_data_set_goes_by_the_observations_period():
    md = _md()
    md.data_sets["HEALTH_Y"] = DataSet("HEALTH_Y", "Health yearly", None, "Yearly", ("OPD",), 3, frozenset(), 10, 0)
    flows = exports.dataflows_for({}, ["OPD"], md)
    rows = [{"dx": "OPD", "ou": "03", "pe": "2026", "value": 50}, {"dx": "OPD", "ou": "03", "pe": "202610", "value": 5},
            {"dx": "OPD", "ou": "03", "pe": "2026Q4", "value": 5}]
    table = list(csv.DictReader(io.StringIO(exports.sdmx_csv(rows, md, flows))))
    assert [(r["TIME_PERIOD"], r["DATAFLOW"]) for r in table] == [
        ("2026", "STATNET:HEALTH_Y(1.0)"), ("2026-10", "STATNET:HEALTH_M(1.0)"), ("2026-Q4", "STATNET:HEALTH_M(1.0)")]
