"""What a history chunk reports, read off its lines (completeness and the yearly queue)."""
from services.aggregation.history import Reported, _rows
from tests.support.builders import CSV_HEADER


def test_a_unit_and_period_is_reported_where_some_value_is_given():
    body = CSV_HEADER + "".join([
        "POP,202401,ບ້ານນ້ຳທາ,M,,12,,,,\n",
        "POP,202401,ບ້ານນ້ຳທາ,F,,  ,,,,\n",      # blank: a deletion
        "HH,202402,V2,,,,,,,\n",                 # empty: a deletion
        "HH,202402,V3,,,7,,,,\n",
        "HH,202402,V3,,,8,,,,\n",                # the same place again: one place
    ])
    csv_rows, reported = _rows(body)
    assert csv_rows.splitlines()[0] == "2,POP,202401,ບ້ານນ້ຳທາ,M,,12,,,,"  # led by its line number
    assert reported == Reported(lines=5, places=[("V3", "202402"), ("ບ້ານນ້ຳທາ", "202401")],
                                elements=["HH", "POP"], cleared=[("V2", "202402"), ("ບ້ານນ້ຳທາ", "202401")])
    # a deletion's unit-year is rebuilt too
    assert reported.years() == [{"ou": "V2", "year": 2024}, {"ou": "V3", "year": 2024},
                                {"ou": "ບ້ານນ້ຳທາ", "year": 2024}]


def test_quarters_queue_their_year_and_years_queue_nothing():
    quarterly = Reported.of([(2, ["POP", "2023Q4", "V1", "", "", "5", "", "", "", ""]),
                             (3, ["POP", "2024Q1", "V1", "", "", "6", "", "", "", ""])])
    assert quarterly.years() == [{"ou": "V1", "year": 2023}, {"ou": "V1", "year": 2024}]
    yearly = Reported.of([(2, ["POP", "2023", "V1", "", "", "5", "", "", "", ""])])
    assert yearly.places == [("V1", "2023")] and yearly.years() == []


def test_a_unit_code_may_hold_any_character():
    odd = "V\x1f1"
    reported = Reported.of([(2, ["POP", "202401", odd, "", "", "5", "", "", "", ""])])
    assert reported.places == [(odd, "202401")] and reported.years() == [{"ou": odd, "year": 2024}]
