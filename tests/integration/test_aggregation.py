"""Aggregates are exact (CONTRACT 5-6): every aggregation type, at village, district,
province and country, for months, quarters and the year, compared cell by cell with
totals this test computes itself from what it submitted; after corrections,
deletions and re-parenting; and through redelivered and out-of-order events."""
from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections import defaultdict
from decimal import Decimal

import pytest
from kombu import Connection
from prometheus_client import REGISTRY

from shared import topology
from shared.events import envelope
from shared.periods import Period, today
from tests.support.builders import tree
from tests.support.client import wait_until

UID = "AGG"
YEAR = 2025
MONTHS = [f"{YEAR}{m:02d}" for m in range(1, 13)]
QUARTERS = [f"{YEAR}Q{q}" for q in range(1, 5)]
# DHIS2's coarser periods, which months and quarters roll into (no data set reports by them):
# bi-months, six-months (calendar and April's), financial years across the new year
OUTPUTS = [f"{YEAR}{b:02d}B" for b in range(1, 7)] + [
    f"{YEAR}S1", f"{YEAR}S2", f"{YEAR - 1}AprilS2", f"{YEAR}AprilS1", f"{YEAR}AprilS2",
    f"{YEAR - 1}April", f"{YEAR}April", f"{YEAR - 1}July", f"{YEAR}July", f"{YEAR - 1}Oct", f"{YEAR}Oct"]

# element -> (value type, aggregation type, combos)
ELEMENTS = {
    "S": ("INTEGER", "SUM", ["M", "F"]),
    "A": ("NUMBER", "AVERAGE", ["M", "F"]),
    "O": ("INTEGER", "AVERAGE_SUM_ORG_UNIT", ["default"]),
    "L": ("INTEGER", "LAST", ["M", "F"]),
    "N": ("INTEGER", "NONE", ["default"]),
    "B": ("BOOLEAN", "SUM", ["default"]),
    "BA": ("BOOLEAN", "AVERAGE", ["default"]),  # the share of yes, in percent (DHIS2)
    "D": ("NUMBER", "SUM", ["default"]),      # decimals: the sums must be exact
    "Q": ("INTEGER", "SUM", ["default"]),     # quarterly
    "QL": ("INTEGER", "LAST", ["default"]),   # quarterly
    "Y": ("INTEGER", "AVERAGE_SUM_ORG_UNIT", ["default"]),  # yearly
}
MONTHLY = ["S", "A", "O", "L", "N", "B", "BA", "D"]
QUARTERLY = ["Q", "QL"]
YEARLY = ["Y"]


def code(de: str) -> str:
    return f"{de}{UID}"


class Model:
    """What the stored values and totals must be, computed independently of statnet."""

    def __init__(self, parents: dict[str, list[tuple[dt.date, str]]]):
        self.values: dict[tuple, Decimal] = {}
        self.received: set[tuple[str, str, str]] = set()  # accepted (data set, period, unit)
        self.parents = parents  # unit -> [(from, parent)], sorted

    def apply(self, values: list[dict], period: str, org_unit: str) -> None:
        for v in values:
            key = (v["dataElement"], v.get("categoryOptionCombo", "default"), org_unit, period)
            if v["value"] == "":
                self.values.pop(key, None)
            else:
                raw = v["value"]
                self.values[key] = Decimal(1 if raw == "true" else 0) if raw in ("true", "false") else Decimal(raw)

    def parent(self, unit: str, day: dt.date) -> str | None:
        current = None
        for start, parent in self.parents.get(unit, []):
            if start <= day:
                current = parent
        return current

    def ancestors(self, unit: str, day: dt.date) -> list[str]:
        out = [unit]
        while (p := self.parent(out[-1], day)) is not None:
            out.append(p)
        return out

    def total(self, dx: str, ou: str, pe: Period):
        return self.total_over(dx, [ou], [pe])

    def total_over(self, dx: str, ous: list[str], pes: list[Period]):
        """One total over the values of any of ``ous``' subtrees in any of ``pes`` (a filter
        of several units or periods; one of each: a cell)."""
        de, _, combo = dx.partition(".")
        atype = ELEMENTS[de[:-len(UID)]][1]
        if not combo and atype in ("LAST", "AVERAGE_SUM_ORG_UNIT"):
            # worked out per combo and summed (DHIS2): a total is the sum of its combos, even
            # where a unit's latest month did not send every combo
            parts = [self.total_over(f"{dx}.{c}", ous, pes) for c in ELEMENTS[de[:-len(UID)]][2]]
            return None if all(p is None for p in parts) else sum(p for p in parts if p is not None)
        leaf: dict[tuple, Decimal] = defaultdict(Decimal)
        for (d, c, unit, period), v in self.values.items():
            if d != de or (combo and c != combo):
                continue
            p = Period.parse(period)
            if not any(pe.start <= p.start and p.end <= pe.end for pe in pes):
                continue
            if atype == "NONE" and (len(ous) > 1 or len(pes) > 1 or unit != ous[0] or p != pes[0]):
                continue
            if not set(ous) & set(self.ancestors(unit, p.start)):
                continue
            leaf[(unit, p.start)] += v
        if not leaf:
            return None
        units: dict[str, list[tuple[dt.date, Decimal]]] = defaultdict(list)
        for (unit, start), v in leaf.items():
            units[unit].append((start, v))
        if atype in ("SUM", "NONE"):
            return sum(leaf.values())
        if atype == "AVERAGE":
            return sum(leaf.values()) / len(leaf) * (100 if ELEMENTS[de[:-len(UID)]][0] == "BOOLEAN" else 1)
        if atype == "AVERAGE_SUM_ORG_UNIT":
            return sum(sum(v for _, v in vs) / len(vs) for vs in units.values())
        if atype == "LAST":
            return sum(max(vs)[1] for vs in units.values())
        raise AssertionError(atype)


def same(expected: Decimal, got) -> bool:
    if expected == expected.to_integral_value():
        return got == int(expected)
    return got == pytest.approx(float(expected), rel=1e-12)


@pytest.fixture(scope="module")
def world(system):
    t, units = tree(UID, districts=2, villages=3, opening="2000-01-01")
    # one village closes after March, one opens in June: they count only while open
    closing, opening = f"VX{UID}", f"VN{UID}"
    units += [{"code": closing, "name": "Closing village", "parent": t.districts[0],
               "openingDate": "2000-01-01", "closedDate": f"{YEAR}-03-31"},
              {"code": opening, "name": "New village", "parent": t.districts[1], "openingDate": f"{YEAR}-06-01"}]
    elements = [{"code": code(de), "name": f"Element {de}", "nameLo": f"ຕົວຊີ້ວັດ {de}", "valueType": vt,
                 "aggregationType": at, "disaggregation": combos}
                for de, (vt, at, combos) in ELEMENTS.items()]
    data_sets = [
        {"code": f"MDS{UID}", "name": "Monthly", "nameLo": "ປະຈຳເດືອນ", "periodType": "Monthly",
         "dataElements": [code(d) for d in MONTHLY], "orgUnitLevel": 4, "timelyDays": 10},
        {"code": f"QDS{UID}", "name": "Quarterly", "periodType": "Quarterly",
         "dataElements": [code(d) for d in QUARTERLY], "orgUnitLevel": 4, "timelyDays": 10},
        {"code": f"YDS{UID}", "name": "Yearly", "periodType": "Yearly",
         "dataElements": [code(d) for d in YEARLY], "orgUnitLevel": 4, "timelyDays": 10},
    ]
    rules = [{"code": f"NEG{UID}", "name": "No negative count", "importance": "HIGH",
              "left": f"#{{{code('S')}}}", "operator": "greater_than_or_equal_to", "right": "0",
              "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": f"MDS{UID}"}]
    system.import_metadata({"orgUnits": units, "dataElements": elements, "dataSets": data_sets,
                            "validationRules": rules})
    parents = {u["code"]: [(dt.date(1900, 1, 1), u.get("parent"))] for u in units}
    return t, Model(parents), closing, opening


def values_for(rng: random.Random, elements: list[str], keep: float = 0.85) -> list[dict]:
    out = []
    for de in elements:
        vt, _, combos = ELEMENTS[de]
        for combo in combos:
            if rng.random() > keep:
                continue  # a value not reported
            if vt == "BOOLEAN":
                value = rng.choice(["true", "false"])
            elif vt == "NUMBER":
                value = str(Decimal(rng.randint(0, 400)) / 10)
            else:
                value = str(rng.randint(0, 500))
            item = {"dataElement": code(de), "value": value}
            if combo != "default":
                item["categoryOptionCombo"] = combo
            out.append(item)
    return out


def submit_all(system, model, returns) -> None:
    """Submit (data set, period, unit, values), wait for each, and apply it to the model."""
    ids = []
    for ds, period, unit, values in returns:
        r = system.submit({"dataSet": f"{ds}{UID}", "period": period, "orgUnit": unit, "dataValues": values})
        assert r.status_code == 202, r.text
        ids.append((r.json()["id"], period, unit, values))
    for rid, period, unit, values in ids:
        status = system.wait_status(rid)["status"]
        assert status == "AGGREGATED", (rid, status)
        model.apply(values, period, unit)
    model.received.update((ds, period, unit) for ds, period, unit, _ in returns)


def check_every_cell(system, t, model: Model, extra_units=()) -> int:
    dx = []
    for de, (_, _, combos) in ELEMENTS.items():
        dx.append(code(de))
        dx += [f"{code(de)}.{c}" for c in combos if c != "default"]
    ous = [t.country, t.province, *t.districts, *t.all_villages, *extra_units]
    pes = MONTHS + QUARTERS + [str(YEAR)] + OUTPUTS
    r = system.get(f"/api/analytics?dx={';'.join(dx)}&ou={';'.join(ous)}&pe={';'.join(pes)}")
    assert r.status_code == 200, r.text
    got = {(row["dx"], row["ou"], row["pe"]): row["value"] for row in r.json()["rows"]}
    checked, wrong = 0, []
    for x in dx:
        for ou in ous:
            for pe in pes:
                expected = model.total(x, ou, Period.parse_output(pe))
                actual = got.pop((x, ou, pe), None)
                if expected is None:
                    if actual is not None:
                        wrong.append((x, ou, pe, None, actual))
                elif not same(expected, actual):
                    wrong.append((x, ou, pe, expected, actual))
                checked += expected is not None
    assert not wrong, f"{len(wrong)} wrong cells, e.g. {wrong[:8]}"
    assert not got
    return checked


def test_every_type_at_every_level_and_period(system, world):
    t, model, closing, opening = world
    rng = random.Random(2025)
    returns = []
    for unit in t.all_villages:
        for month in MONTHS:
            if rng.random() < 0.1:
                continue  # a month not reported at all
            returns.append(("MDS", month, unit, values_for(rng, MONTHLY)))
        for quarter in QUARTERS[:3]:
            returns.append(("QDS", quarter, unit, values_for(rng, QUARTERLY, keep=1)))
        returns.append(("YDS", str(YEAR), unit, values_for(rng, YEARLY, keep=1)))
    returns += [("MDS", m, closing, values_for(rng, MONTHLY)) for m in MONTHS[:3]]
    returns += [("MDS", m, opening, values_for(rng, MONTHLY)) for m in MONTHS[5:]]
    submit_all(system, model, returns)
    assert check_every_cell(system, t, model, [closing, opening]) > 1500


def test_corrections_and_deletions_leave_every_total(system, world):
    t, model, closing, opening = world
    rng = random.Random(7)
    returns = []
    for unit in t.all_villages[:4]:
        for month in rng.sample(MONTHS, 5):
            values = []
            for de in MONTHLY:
                for combo in ELEMENTS[de][2]:
                    roll = rng.random()
                    item = {"dataElement": code(de)}
                    if combo != "default":
                        item["categoryOptionCombo"] = combo
                    if roll < 0.3:
                        values.append({**item, "value": ""})  # deleted
                    elif roll < 0.6:
                        v = values_for(random.Random(rng.random()), [de], keep=1)
                        values.append(next(x for x in v if x.get("categoryOptionCombo", "default") == combo))
                    # else: not sent, so it stays as it was
            returns.append(("MDS", month, unit, values))
    # the last quarter of a LAST element removed: the unit's last value is now Q2's
    returns.append(("QDS", QUARTERS[2], t.all_villages[0], [{"dataElement": code("QL"), "value": ""}]))
    submit_all(system, model, returns)
    check_every_cell(system, t, model, [closing, opening])


def test_a_rejected_correction_changes_nothing(system, world):
    t, model, closing, opening = world
    village = t.all_villages[0]
    before = system.analytics(code("S"), village, MONTHS[0])
    r = system.submit({"dataSet": f"MDS{UID}", "period": MONTHS[0], "orgUnit": village,
                       "dataValues": [{"dataElement": code("S"), "categoryOptionCombo": "M", "value": "-1000"}]})
    sub = system.wait_status(r.json()["id"])
    assert sub["status"] == "REJECTED"
    assert sub["importCount"]["imported"] == 0 and sub["importCount"]["ignored"] == 1
    assert system.analytics(code("S"), village, MONTHS[0]) == before


def test_re_parenting_mid_year_splits_the_year_between_districts(system, world):
    t, model, closing, opening = world
    d1, d2 = t.districts
    moving, whole = t.villages[d1][2], t.villages[d2][0]
    system.import_metadata({"orgUnits": [
        {"code": moving, "parent": d2, "parentFrom": f"{YEAR}-07-01"},
        {"code": whole, "parent": d1, "parentFrom": f"{YEAR}-01-01"}]})
    model.parents[moving].append((dt.date(YEAR, 7, 1), d2))
    model.parents[whole] = [(dt.date(1900, 1, 1), d2), (dt.date(YEAR, 1, 1), d1)]
    check_every_cell(system, t, model, [closing, opening])
    # a return arriving after the move for a month before it still counts in the old district
    rng = random.Random(99)
    submit_all(system, model, [("MDS", MONTHS[2], moving, values_for(rng, MONTHLY, keep=1))])
    check_every_cell(system, t, model, [closing, opening])


# ------------------------------------------------------------------ delivery

def _handled(event: str) -> float:
    return REGISTRY.get_sample_value("statnet_event_handler_seconds_count",
                                     {"service": "aggregation", "event": event}) or 0.0


def _publish(settings, message: dict) -> None:
    with Connection(settings.amqp_uri) as conn:
        producer = conn.Producer()
        producer.publish(message, exchange=topology.events_exchange("validation"), routing_key="return_validated",
                         serializer="json", declare=[topology.events_exchange("validation")])


def _validated(seq: int, unit: str, period: str, value: str) -> dict:
    return envelope("validation", "return_validated", {
        "return_id": f"crafted-{seq}", "seq": seq, "data_set": f"MDS{UID}", "org_unit": unit, "period": period,
        "received_at": dt.datetime.now(dt.timezone.utc), "on_time": False, "submitted_by": "test",
        "values": [{"data_element": code("S"), "category_option_combo": "M", "org_unit": unit,
                    "period": period, "value": value, "comment": None}],
        "violations": []})


def test_a_redelivered_event_counts_once(system, world, settings):
    t, model, *_ = world
    unit, period = t.all_villages[1], "202401"
    message = _validated(10**12, unit, period, "40")
    before = _handled("return_validated")
    _publish(settings, message)
    _publish(settings, message)  # the broker delivering the same event again
    wait_until(lambda: _handled("return_validated") >= before + 2, message="both deliveries handled")
    assert system.analytics(code("S"), unit, period) == {(code("S"), unit, period): 40}
    assert system.analytics(code("S"), t.province, period) == {(code("S"), t.province, period): 40}


def test_an_older_return_arriving_late_does_not_overwrite_a_newer_one(system, world, settings):
    t, model, *_ = world
    unit, period = t.all_villages[1], "202402"
    before = _handled("return_validated")
    _publish(settings, _validated(10**12 + 20, unit, period, "5"))   # newer
    _publish(settings, _validated(10**12 + 10, unit, period, "9"))   # older, delivered after it
    wait_until(lambda: _handled("return_validated") >= before + 2, message="both events handled")
    assert system.analytics(code("S"), unit, period) == {(code("S"), unit, period): 5}


def _batches() -> tuple[float, float]:
    labels = {"service": "aggregation", "event": "return_validated"}
    return (REGISTRY.get_sample_value("statnet_event_batch_size_count", labels) or 0.0,
            REGISTRY.get_sample_value("statnet_event_batch_size_sum", labels) or 0.0)


def _dead_letters() -> float:
    return REGISTRY.get_sample_value("statnet_dead_letters_total", {"service": "aggregation"}) or 0.0


def test_events_arriving_together_are_handled_in_batches_and_a_bad_one_holds_back_none(system, world, settings):
    t, *_ = world
    cells = [(unit, f"2022{m:02d}") for unit in t.all_villages[:5] for m in range(1, 5)]
    good = [_validated(10**12 + 100 + i, unit, period, str(i + 1)) for i, (unit, period) in enumerate(cells)]
    # fits the event schema, fails in the handler every time: not a number for an INTEGER element
    poison = _validated(10**12 + 99, t.all_villages[0], "202205", "abc")
    batches, events, dead = *_batches(), _dead_letters()
    with Connection(settings.amqp_uri) as conn:
        producer = conn.Producer()
        for message in good[:10] + [poison] + good[10:] + [good[3]]:  # and one delivered twice
            producer.publish(message, exchange=topology.events_exchange("validation"),
                             routing_key="return_validated", serializer="json",
                             declare=[topology.events_exchange("validation")])
    expected = sum(range(1, len(good) + 1))
    # every good event is in the totals exactly once, whichever batch it came in with the poison
    wait_until(lambda: system.analytics(code("S"), t.province, "2022") == {(code("S"), t.province, "2022"): expected},
               message="the good events of the batch aggregated")
    for i, (unit, period) in enumerate(cells):
        assert system.analytics(code("S"), unit, period) == {(code("S"), unit, period): i + 1}
    # the poison alone is retried and dead-lettered (after its 1 s and 5 s retries)
    wait_until(lambda: _dead_letters() == dead + 1, timeout=60, message="the poison dead-lettered")
    assert system.analytics(code("S"), t.all_villages[0], "202205") == {}
    # and they were not one transaction each: some batch carried several
    now_batches, now_events = _batches()
    assert now_events - events > now_batches - batches, (now_batches - batches, now_events - events)


# ------------------------------------------------------------------ exports

def test_csv_and_sdmx_exports_carry_the_same_numbers(system, world):
    t, *_ = world
    query = f"dx={code('S')};{code('S')}.F;{code('O')}&ou={t.province};{t.districts[0]}&pe={YEAR};{YEAR}Q1"
    rows = system.get(f"/api/analytics?{query}").json()["rows"]
    assert rows
    r = system.get(f"/api/analytics.csv?{query}")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["dx"], x["ou"], x["pe"], float(x["value"])) for x in table] == \
        [(x["dx"], x["ou"], x["pe"], float(x["value"])) for x in rows]
    assert table[0]["ounamelo"] == "ແຂວງ"

    from pysdmx.io import read_sdmx

    r = system.get(f"/api/analytics.sdmx.csv?{query}")
    assert r.status_code == 200 and "sdmx" in r.headers["Content-Type"]
    message = read_sdmx(r.text)
    (dataset,) = message.data
    assert dataset.short_urn == f"Dataflow=STATNET:MDS{UID}(1.0)"
    frame = dataset.data
    assert list(frame.columns) == ["DATA_ELEMENT", "DISAGGREGATION", "REF_AREA", "TIME_PERIOD", "OBS_VALUE"]
    sdmx = sorted((str(x.DATA_ELEMENT), str(x.DISAGGREGATION), str(x.REF_AREA), str(x.TIME_PERIOD),
                   float(x.OBS_VALUE)) for x in frame.itertuples())
    expected = sorted((x["dx"].partition(".")[0], x["dx"].partition(".")[2] or "_T", x["ou"],
                       Period.parse(x["pe"]).sdmx(), float(x["value"])) for x in rows)
    assert sdmx == expected
    # Lao labels, SDMX-CSV "both" style
    r = system.get(f"/api/analytics.sdmx.csv?{query}&labels=both&locale=lo")
    both = read_sdmx(r.text).data[0].data
    assert any("ຕົວຊີ້ວັດ" in str(v) for v in both.to_dict("list")[both.columns[0]]) or "ຕົວຊີ້ວັດ" in r.text
    # SDMX-CSV 1.0: the measure's column is plainly OBS_VALUE, and time (not coded) has no label
    header, first = list(csv.reader(io.StringIO(r.text)))[:2]
    assert header[-2:] == ["TIME_PERIOD: Time period", "OBS_VALUE"]
    assert ":" not in first[-2], first


def test_relative_periods_and_unit_keywords_answer_for_what_they_name(system, world):
    """DHIS2's pe keywords (QUARTERS_THIS_YEAR, LAST_4_QUARTERS, anchored by
    relativePeriodDate) and ou keywords (USER_ORGUNIT_CHILDREN, LEVEL-n) answer exactly
    as the fixed periods and units they stand for."""
    t, *_ = world
    dx = f"{code('S')};{code('L')}.F;{code('O')}"
    fixed = system.get(f"/api/analytics?dx={dx}&ou={';'.join(t.districts)}&pe={';'.join(QUARTERS)}").json()
    assert fixed["rows"]
    province = system.as_user(system.create_user(f"rel{UID}", "supervisor", t.province))
    for ou, pe, anchor in ((f"{t.province};LEVEL-3", "QUARTERS_THIS_YEAR", f"{YEAR}-08-15"),
                           ("USER_ORGUNIT_CHILDREN", "LAST_4_QUARTERS", f"{YEAR + 1}-01-10"),
                           ("LEVEL-3", f"QUARTERS_LAST_YEAR;{YEAR}Q2", f"{YEAR + 1}-12-31")):
        r = province.get(f"/api/analytics?dx={dx}&ou={ou}&pe={pe}&relativePeriodDate={anchor}")
        assert r.status_code == 200, (ou, pe, r.text)
        assert r.json()["rows"] == fixed["rows"], (ou, pe)
        assert r.json()["metaData"]["dimensions"]["ou"] == t.districts
        assert r.json()["metaData"]["dimensions"]["pe"] == QUARTERS
        csv_rows = list(csv.DictReader(io.StringIO(
            province.get(f"/api/analytics.csv?dx={dx}&ou={ou}&pe={pe}&relativePeriodDate={anchor}").text)))
        assert [(x["dx"], x["ou"], x["pe"]) for x in csv_rows] == [(x["dx"], x["ou"], x["pe"]) for x in fixed["rows"]]
    # DHIS2 clients' own spelling: dimension= per dimension, a one-item filter, analytics.json
    r = province.get(f"/api/analytics.json?dimension=dx:{code('S')}&dimension=ou:USER_ORGUNIT_CHILDREN"
                     f"&filter=pe:{YEAR}&skipMeta=true")
    assert r.status_code == 200 and "metaData" not in r.json(), r.text
    year = {row["ou"]: row["value"] for row in
            system.get(f"/api/analytics?dx={code('S')}&ou={';'.join(t.districts)}&pe={YEAR}").json()["rows"]}
    assert r.json()["rows"] == [{"dx": code("S"), "ou": ou, "value": v} for ou, v in year.items()]
    # and in CSV the filter has no column either (it had its pe column)
    as_csv = province.get(f"/api/analytics.csv?dimension=dx:{code('S')}&dimension=ou:USER_ORGUNIT_CHILDREN"
                          f"&filter=pe:{YEAR}")
    header, *lines = list(csv.reader(io.StringIO(as_csv.text)))
    assert header == ["dx", "ou", "value", "dxname", "dxnamelo", "ouname", "ounamelo"], header
    assert [(x[0], x[1], float(x[2])) for x in lines] == [(code("S"), ou, v) for ou, v in year.items()]
    assert province.get(f"/api/completeness?ds=MDS{UID}&ou=USER_ORGUNIT&pe={YEAR}").json()["orgUnit"] == t.province
    # userOrgUnit: a dashboard's choice among the user's units stands for USER_ORGUNIT (ignored,
    # the province's total was answered as the district's); outside the user's scope, a 403
    d1, d2 = t.districts
    r = province.get(f"/api/analytics?dimension=dx:{code('S')}&dimension=ou:USER_ORGUNIT&pe={YEAR}&userOrgUnit={d1}")
    assert r.json()["rows"] == [{"dx": code("S"), "ou": d1, "pe": str(YEAR), "value": year[d1]}], r.text
    r = province.get(f"/api/analytics?dx={code('S')}&ou=USER_ORGUNIT_CHILDREN&pe={YEAR}&userOrgUnit={t.province}")
    assert {row["ou"] for row in r.json()["rows"]} == set(t.districts), r.text
    assert province.get(f"/api/completeness?ds=MDS{UID}&ou=USER_ORGUNIT&pe={YEAR}&userOrgUnit={d2}"
                        ).json()["orgUnit"] == d2
    district = system.as_user(system.create_user(f"relu{UID}", "supervisor", d1))
    r = district.get(f"/api/analytics?dx={code('S')}&ou=USER_ORGUNIT&pe={YEAR}&userOrgUnit={d2}")
    assert r.status_code == 403 and d2 in r.json()["message"], r.text
    # the keywords below a userOrgUnit answer only within the caller's scope, in every form (a
    # district's user read both districts' totals as the province's children, and the country's
    # total through a filter)
    for path, ou in (("analytics", "ou=USER_ORGUNIT_CHILDREN"), ("analytics", "ou=USER_ORGUNIT_GRANDCHILDREN"),
                     ("analytics.sdmx.csv", "ou=USER_ORGUNIT_CHILDREN"), ("analytics.csv", "ou=USER_ORGUNIT_CHILDREN"),
                     ("analytics", "filter=ou:USER_ORGUNIT_CHILDREN"), ("analytics", "ou=LEVEL-3")):
        r = district.get(f"/api/{path}?dx={code('S')}&{ou}&pe={YEAR}&userOrgUnit={t.province}")
        assert r.status_code == 403 and t.province in r.json()["message"], (path, ou, r.text)
    r = district.get(f"/api/analytics?dx={code('S')}&ou=USER_ORGUNIT_CHILDREN&pe={YEAR}&userOrgUnit={d1}")
    assert r.status_code == 200, r.text
    r = province.get(f"/api/analytics?dx={code('S')}&ou=USER_ORGUNIT&pe={YEAR}&userOrgUnit=NOWHERE")
    assert r.status_code == 400 and "userOrgUnit" in r.json()["message"], r.text
    # rows are keyed by code: asked by name, a 400 (codes were answered as if names had been)
    for scheme, status in (("CODE", 200), ("UID", 200), ("NAME", 400), ("SHORTNAME", 400)):
        for name in ("outputIdScheme", "outputOrgUnitIdScheme"):
            r = province.get(f"/api/analytics?dx={code('S')}&ou={d1}&pe={YEAR}&{name}={scheme}")
            assert r.status_code == status and (status == 200 or name in r.json()["message"]), r.text
    # a district's supervisor: its own villages as they sat in the period asked (a village
    # re-parented mid-year is answered where its year began), so that they add up to the
    # district's total; not another's district as a boundary
    district = system.as_user(system.create_user(f"reld{UID}", "supervisor", d1))
    for pe in [str(YEAR), *QUARTERS]:
        r = district.get(f"/api/analytics?dx={code('S')}&ou=USER_ORGUNIT_CHILDREN&pe={pe}")
        assert r.status_code == 200, r.text
        total = system.analytics(code("S"), d1, pe)[(code("S"), d1, pe)]
        assert sum(row["value"] for row in r.json()["rows"]) == total, (pe, r.json()["rows"], total)
        r = district.get(f"/api/analytics?dx={code('S')}&ou={d1};LEVEL-4&pe={pe}")
        assert sum(row["value"] for row in r.json()["rows"]) == total, (pe, r.json()["rows"], total)
    r = district.get(f"/api/analytics?dx={dx}&ou={d2};LEVEL-4&pe={YEAR}")
    assert r.status_code == 403 and d2 in r.json()["message"], r.text
    r = system.get(f"/api/analytics?dx={dx}&ou={d1}&pe=LAST_13_MONTHS")
    assert r.status_code == 400 and "LAST_13_MONTHS" in r.json()["message"]


def test_a_filter_of_several_periods_or_units_is_one_total_over_them(system, world):
    """DHIS2's filter=pe:LAST_12_MONTHS, filter=ou:A;B: each row one total over the filter's
    items, by each element's aggregation type (a LAST the latest of them all, an
    AVERAGE_SUM_ORG_UNIT each unit's mean over all the periods); a unit inside another's
    subtree counted once; periods that overlap refused, as SDMX is, which has one period
    and one area per observation."""
    t, model, closing, opening = world
    d1, d2 = t.districts
    dx = [code(de) for de in ("S", "A", "O", "L", "N", "BA", "D", "Q", "QL", "Y")] + [f"{code('L')}.F", f"{code('S')}.M"]
    ous = [t.province, *t.districts, *t.all_villages, closing, opening]
    dims = f"dimension=dx:{';'.join(dx)}"

    def check(rows, key, expected_for) -> int:
        got = {key(row): row["value"] for row in rows}
        checked = 0
        for k, expected in expected_for.items():
            actual = got.pop(k, None)
            assert (actual is None) if expected is None else same(expected, actual), (k, expected, actual)
            checked += expected is not None
        assert not got, got
        return checked

    checked = 0
    for pe_filter, periods, anchor in ((f"{YEAR}02;{YEAR}03;{YEAR}Q3", [f"{YEAR}02", f"{YEAR}03", f"{YEAR}Q3"], None),
                                       (f"{YEAR}Q1;{YEAR}05;{YEAR}Q4", [f"{YEAR}Q1", f"{YEAR}05", f"{YEAR}Q4"], None),
                                       # a year (its yearly rows) beside a quarter (other years hold
                                       # values that other tests sent as bare events: not modelled)
                                       (f"{YEAR};{YEAR + 1}Q1", [str(YEAR), f"{YEAR + 1}Q1"], None),
                                       ("LAST_12_MONTHS", MONTHS, f"{YEAR + 1}-01-15")):
        query = f"/api/analytics?{dims}&dimension=ou:{';'.join(ous)}&filter=pe:{pe_filter}"
        r = system.get(query + (f"&relativePeriodDate={anchor}" if anchor else ""))
        assert r.status_code == 200, r.text
        assert all(set(row) == {"dx", "ou", "value"} for row in r.json()["rows"])
        pes = [Period.parse(p) for p in periods]
        checked += check(r.json()["rows"], lambda row: (row["dx"], row["ou"]),
                         {(x, ou): model.total_over(x, [ou], pes) for x in dx for ou in ous})

    # units: one of d1's villages beside d1 itself adds nothing; one of d2's adds itself
    units = [d1, t.villages[d1][0], t.villages[d2][1]]
    pes = MONTHS[:4] + QUARTERS + [str(YEAR)]
    r = system.get(f"/api/analytics?{dims}&dimension=pe:{';'.join(pes)}&filter=ou:{';'.join(units)}")
    assert r.status_code == 200, r.text
    checked += check(r.json()["rows"], lambda row: (row["dx"], row["pe"]),
                     {(x, pe): model.total_over(x, units, [Period.parse(pe)]) for x in dx for pe in pes})
    # and both at once: one row per data item
    r = system.get(f"/api/analytics?{dims}&filter=ou:{d2};{t.villages[d1][1]}&filter=pe:{YEAR}Q1;{YEAR}Q4")
    assert r.status_code == 200, r.text
    checked += check(r.json()["rows"], lambda row: row["dx"],
                     {x: model.total_over(x, [d2, t.villages[d1][1]], [Period.parse(f"{YEAR}Q1"),
                                                                       Period.parse(f"{YEAR}Q4")]) for x in dx})
    assert checked > 300
    # in CSV, the same numbers without the filtered columns
    as_csv = system.get(f"/api/analytics.csv?dimension=dx:{code('S')}&dimension=pe:{YEAR}&filter=ou:{d1};{d2}")
    header, line = list(csv.reader(io.StringIO(as_csv.text)))
    assert header == ["dx", "pe", "value", "dxname", "dxnamelo"], header
    assert Decimal(line[2]) == model.total_over(code("S"), [d1, d2], [Period.parse(str(YEAR))])

    r = system.get(f"/api/analytics?{dims}&dimension=ou:{d1}&filter=pe:{YEAR};{YEAR}Q2")
    assert r.status_code == 400 and f"{YEAR}Q2 and {YEAR}" in r.json()["message"] or \
        f"{YEAR} and {YEAR}Q2" in r.json()["message"], r.text
    r = system.get(f"/api/analytics?dimension=ou:{d1}&dimension=pe:{YEAR}&filter=dx:{code('S')};{code('D')}")
    assert r.status_code == 400 and "filter dx" in r.json()["message"], r.text
    r = system.get(f"/api/analytics.sdmx.csv?dimension=dx:{code('S')}&dimension=ou:{d1}"
                   f"&filter=pe:{YEAR}Q1;{YEAR}Q2")
    assert r.status_code == 400 and "TIME_PERIOD" in r.json()["message"], r.text


# ------------------------------------------------------------------ completeness

def test_completeness_counts_expected_actual_and_on_time(system, world):
    t, model, closing, opening = world
    d1, d2 = t.districts
    ds = f"MDS{UID}"
    # the current month: these returns are on time (due at month end + 10 days)
    current = Period.containing("Monthly", today())
    sent = t.villages[d1][:2]
    for unit in sent:
        r = system.submit({"dataSet": ds, "period": current.code, "orgUnit": unit,
                           "dataValues": [{"dataElement": code("O"), "value": "1"}]})
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    # a rejected return is not "actual"
    rejected = t.villages[d2][1]
    r = system.submit({"dataSet": ds, "period": current.code, "orgUnit": rejected,
                       "dataValues": [{"dataElement": code("S"), "categoryOptionCombo": "M", "value": "-1"}]})
    assert system.wait_status(r.json()["id"])["status"] == "REJECTED"

    c = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe={current.code}").json()
    expected_units = 7  # 3 + 3 villages + the new one; the closed one is gone
    assert (c["dataSet"], c["orgUnit"], c["period"]) == (ds, t.province, current.code)
    assert (c["expected"], c["actual"], c["onTime"]) == (expected_units, 2, 2)
    assert c["rate"] == round(100 * 2 / expected_units, 2) and c["onTimeRate"] == c["rate"]
    children = {x["orgUnit"]: x for x in c["children"]}
    # after the move: d1 holds its own two villages plus `whole`; d2 holds `moving` and the rest
    assert sum(x["expected"] for x in children.values()) == expected_units
    assert children[d1]["actual"] == 2
    # each child the same shape, down to the villages (a district's "children": [] read as
    # "no villages"): the same answer as asking the district itself
    alone = system.get(f"/api/completeness?ds={ds}&ou={d1}&pe={current.code}").json()
    assert children[d1] == alone
    villages = {x["orgUnit"]: x for x in alone["children"]}
    assert set(sent) <= set(villages) and all(villages[v]["actual"] == 1 for v in sent)
    assert all(x["children"] == [] and x["expected"] == 1 for x in villages.values())
    assert [x["orgUnit"] for x in alone["children"]] == sorted(villages)

    # a month of last year, after the returns of the tests above: all late
    january = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe={MONTHS[0]}").json()
    reported = {unit for ds_, period, unit in model.received if ds_ == "MDS" and period == MONTHS[0]}
    assert january["expected"] == 7  # six villages + the closing one; the new one is not open yet
    assert january["actual"] == len(reported) and january["onTime"] == 0
    # a quarter counts unit-months: the closing village 3, the new one 0 in Q1
    q1 = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe={QUARTERS[0]}").json()
    assert q1["expected"] == 6 * 3 + 3
    # a six-month counts its six months (DHIS2's six-monthly reporting rate), a financial
    # year its twelve across the new year
    s1 = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe={YEAR}S1").json()
    months = [system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe={m}").json() for m in MONTHS[:6]]
    assert (s1["period"], s1["expected"], s1["actual"]) == (
        f"{YEAR}S1", sum(m["expected"] for m in months), sum(m["actual"] for m in months))
    fy = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe={YEAR - 1}July").json()
    # July-December of the year before: six villages and the one closing in March
    assert fy["expected"] == s1["expected"] + 7 * 6
    # a relative period naming one period is that period (DHIS2's reporting rates take them)
    last = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe=LAST_QUARTER"
                      f"&relativePeriodDate={YEAR}-05-20").json()
    assert (last["period"], last["expected"]) == (QUARTERS[0], q1["expected"])
    now = system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe=THIS_MONTH"
                     f"&relativePeriodDate={current.start.isoformat()}").json()
    assert (now["period"], now["actual"]) == (current.code, 2)


def test_on_time_follows_the_data_sets_timely_days_as_it_is_now(system, world):
    """DHIS2 works timeliness out from the current timelyDays: a province giving districts
    more days sees the returns they fit on time at once, in completeness and in each
    return's status (both kept the verdict taken with the setting of the day it came)."""
    t, model, *_ = world
    ds, village = f"MDS{UID}", t.villages[t.districts[0]][0]
    values = [{"dataElement": code("O"), "value": "7"}]
    r = system.submit({"dataSet": ds, "period": MONTHS[0], "orgUnit": village, "dataValues": values})
    assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    model.apply(values, MONTHS[0], village)

    def january():
        return system.get(f"/api/completeness?ds={ds}&ou={t.province}&pe={MONTHS[0]}").json()

    before = january()
    assert before["actual"] > 0 and before["onTime"] == 0
    assert system.get(f"/api/submissions/{r.json()['id']}").json()["onTime"] is False
    system.import_metadata({"dataSets": [{"code": ds, "timelyDays": 3650}]})
    try:
        after = january()
        assert after["onTime"] == after["actual"] == before["actual"]
        assert system.get(f"/api/submissions/{r.json()['id']}").json()["onTime"] is True
    finally:
        system.import_metadata({"dataSets": [{"code": ds, "timelyDays": 10}]})
    assert january()["onTime"] == 0


def test_completeness_refuses_bad_parameters_by_name(system, world):
    t, *_ = world
    r = system.get(f"/api/completeness?ds=NOPE&ou={t.province}&pe=2025")
    assert r.status_code == 400 and "NOPE" in r.json()["message"]
    r = system.get(f"/api/completeness?ds=YDS{UID}&ou={t.province}&pe=202501")
    assert r.status_code == 400 and "finer" in r.json()["message"]
    r = system.get(f"/api/completeness?ds=YDS{UID}&ou={t.province}&pe={YEAR}July")  # a year across it
    assert r.status_code == 400 and "do not fit" in r.json()["message"], r.text
    r = system.get(f"/api/completeness?ds=MDS{UID}&ou={t.province}")
    assert r.status_code == 400 and "pe" in r.json()["message"]
    r = system.get(f"/api/completeness?ds=MDS{UID}&ou={t.province}&pe=LAST_3_MONTHS")
    assert r.status_code == 400 and "names 3 periods" in r.json()["message"]
    r = system.get("/api/completeness?ds=NOPE&ou=ZZ&pe=2025x")  # every problem at once
    assert r.status_code == 400 and all(p in r.json()["message"] for p in ("ds: unknown", "ou: unknown", "pe:"))


def test_months_of_one_village_aggregated_concurrently_add_up_in_the_year(system, world):
    """Regression: each return recomputes its village's year; concurrent ones must not lose a month."""
    import eventlet

    t, model, *_ = world
    village, year = t.all_villages[3], 2019
    bodies = [{"dataSet": f"MDS{UID}", "period": f"{year}{m:02d}", "orgUnit": village,
               "dataValues": [{"dataElement": code("S"), "categoryOptionCombo": "F", "value": str(m * 11)}]}
              for m in range(1, 13)]
    pool = eventlet.GreenPool(12)
    ids = list(pool.imap(lambda b: system.submit(b).json()["id"], bodies))
    for rid in ids:
        assert system.wait_status(rid)["status"] == "AGGREGATED"
    assert system.analytics(code("S"), village, str(year)) == {(code("S"), village, str(year)): 11 * 78}


# ------------------------------------------------------------------ last: adds a district

def test_a_village_moved_to_a_district_opening_later_takes_its_months_along(system, world):
    """A village moved from May to a district that opens in October (its villages moved
    first): the new district's place holds from the beginning, so May to September go with
    the village (they stayed in the old district, under a path nothing showed any more)."""
    t, model, closing, opening = world
    d1, d2 = t.districts
    new_district, village = f"DN{UID}", t.villages[d2][2]
    system.import_metadata({"orgUnits": [
        {"code": new_district, "name": "New district", "nameLo": "ເມືອງໃໝ່", "parent": t.province,
         "openingDate": f"{YEAR}-10-15"},
        {"code": village, "parent": new_district, "parentFrom": f"{YEAR}-05-01"}]})
    model.parents[new_district] = [(dt.date(1900, 1, 1), t.province)]
    model.parents[village].append((dt.date(YEAR, 5, 1), new_district))
    check_every_cell(system, t, model, [closing, opening, new_district])
    # (check_every_cell compared them; some month before the district opened has data)
    assert any(system.analytics(code("S"), new_district, m) for m in MONTHS[4:9])


def test_dhis2s_order_limit_and_skip_data_are_answered_and_dates_refused(system, world):
    """A dashboard's top villages: order and limit were ignored (every row, in code order);
    startDate/endDate beside pe were ignored too (October's dates answered with the year)."""
    t, model, *_ = world
    base = f"/api/analytics?dx={code('S')}&ou={';'.join(t.all_villages)}&pe={MONTHS[0]}"
    every = system.get(base).json()["rows"]
    values = sorted(r["value"] for r in every)
    assert len(values) > 2
    top = system.get(base + "&order=DESC&limit=2").json()["rows"]
    assert [r["value"] for r in top] == values[::-1][:2]
    assert [r["value"] for r in system.get(base + "&order=asc").json()["rows"]] == values
    assert system.get(base + "&skipData=true").json()["rows"] == []
    assert "metaData" in system.get(base + "&skipData=true").json()
    for bad, name in (("&order=UP", "order"), ("&limit=0", "limit"), ("&limit=10001", "limit"),
                      (f"&startDate={YEAR}-10-01&endDate={YEAR}-10-31", "startDate")):
        r = system.get(base + bad)
        assert r.status_code == 400 and name in r.json()["message"], (bad, r.text)
