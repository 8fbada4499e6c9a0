import datetime as dt

import pytest

from services.registry.hierarchy import FAR_PAST, CycleError, Link, compute_paths, merge, parent_on, set_parent

D = dt.date


def test_moving_keeps_the_old_parent_before_the_move():
    links = [Link("D1", D(2000, 1, 1))]
    moved = set_parent(links, "D2", D(2026, 7, 1))
    assert moved == [Link("D1", D(2000, 1, 1), D(2026, 7, 1)), Link("D2", D(2026, 7, 1))]
    assert parent_on(moved, D(2026, 6, 30)) == "D1"
    assert parent_on(moved, D(2026, 7, 1)) == "D2"


def test_moving_back_and_correcting_a_move_date():
    links = set_parent([Link("D1", D(2000, 1, 1))], "D2", D(2026, 7, 1))
    corrected = set_parent(links, "D2", D(2026, 3, 1))
    assert corrected == [Link("D1", D(2000, 1, 1), D(2026, 3, 1)), Link("D2", D(2026, 3, 1))]
    back = set_parent(corrected, "D1", D(2026, 3, 1))
    assert back == [Link("D1", D(2000, 1, 1))]  # merged again


def test_a_move_re_dated_later_leaves_the_months_between_with_the_old_parent():
    """A probe moved a village from 15 July, then posted the same parent from 1 October: it was
    "no change", and August and September stayed with the new district."""
    moved = set_parent([Link("D1", D(2000, 1, 1))], "D2", D(2026, 7, 15))
    later = set_parent(moved, "D2", D(2026, 10, 1))
    assert later == [Link("D1", D(2000, 1, 1), D(2026, 10, 1)), Link("D2", D(2026, 10, 1))]
    assert parent_on(later, D(2026, 9, 30)) == "D1"
    # a move scheduled after it goes, as any link after the date posted does
    scheduled = set_parent(moved, "D3", D(2027, 1, 1))
    assert set_parent(scheduled, "D2", D(2026, 10, 1)) == later
    # a unit under the same parent from its first link has no parent before to keep it
    assert set_parent([Link("D1", D(2000, 1, 1))], "D1", D(2026, 10, 1)) == [Link("D1", D(2000, 1, 1))]


def test_merge_joins_adjacent_links_with_the_same_parent():
    assert merge([Link("A", D(2000, 1, 1), D(2001, 1, 1)), Link("A", D(2001, 1, 1))]) == [Link("A", D(2000, 1, 1))]


def test_paths_follow_moves_down_the_tree():
    links = {
        "LA": [Link(None, D(1975, 1, 1))],
        "03": [Link("LA", D(1990, 1, 1))],
        "D1": [Link("03", D(1990, 1, 1))],
        "D2": [Link("03", D(1990, 1, 1))],
        "V": set_parent([Link("D1", D(1990, 1, 1))], "D2", D(2026, 7, 1)),
        "H": [Link("V", D(2000, 1, 1))],  # a unit under the village moves with it
    }
    paths = compute_paths(links)
    assert [(p.path, p.level, p.valid_from, p.valid_to) for p in paths["H"]] == [
        ("/LA/03/D1/V/H/", 5, FAR_PAST, D(2026, 7, 1)),  # a first link holds from the beginning
        ("/LA/03/D2/V/H/", 5, D(2026, 7, 1), None),
    ]
    assert paths["03"][0].path == "/LA/03/" and paths["03"][0].level == 2


def test_a_cycle_is_named():
    links = {"A": [Link("B", D(2000, 1, 1))], "B": [Link("C", D(2000, 1, 1))], "C": [Link("A", D(2000, 1, 1))]}
    with pytest.raises(CycleError) as err:
        compute_paths(links)
    assert set(err.value.units) == {"A", "B", "C"}


def test_a_cycle_is_a_matter_of_dates():
    # V left D in July; D sits under V from August: on no day is either its own ancestor
    links = {
        "LA": [Link(None, D(1975, 1, 1))],
        "D": [Link("LA", D(2000, 1, 1), D(2026, 8, 1)), Link("V", D(2026, 8, 1))],
        "D2": [Link("LA", D(2000, 1, 1))],
        "V": set_parent([Link("D", D(2000, 1, 1))], "D2", D(2026, 7, 1)),
    }
    paths = compute_paths(links)
    assert [(p.path, p.valid_from, p.valid_to) for p in paths["D"]] == [
        ("/LA/D/", FAR_PAST, D(2026, 8, 1)),
        ("/LA/D2/V/D/", D(2026, 8, 1), None),
    ]
    assert [(p.path, p.level) for p in paths["V"]] == [("/LA/D/V/", 3), ("/LA/D2/V/", 3)]


def test_a_cycle_on_some_days_is_named_with_its_first_day():
    # D under V from June, while V is still D's until July: June is a cycle
    links = {
        "LA": [Link(None, D(1975, 1, 1))],
        "D": [Link("LA", D(2000, 1, 1), D(2026, 6, 1)), Link("V", D(2026, 6, 1))],
        "D2": [Link("LA", D(2000, 1, 1))],
        "V": set_parent([Link("D", D(2000, 1, 1))], "D2", D(2026, 7, 1)),
    }
    with pytest.raises(CycleError) as err:
        compute_paths(links)
    assert set(err.value.units) == {"D", "V"} and err.value.on == D(2026, 6, 1)


def test_a_unit_moved_under_one_that_opens_later_has_a_place_on_every_day():
    """V moves under C from June; C's own first link begins in September (its opening).
    June to September were nowhere: V's stored data of those months kept the old district's
    path while V was shown under C, and its own yearly total lost them."""
    links = {
        "LA": [Link(None, D(1975, 1, 1))],
        "D1": [Link("LA", D(1990, 1, 1))],
        "D2": [Link("LA", D(1990, 1, 1))],
        "C": [Link("D2", D(2026, 9, 15))],
        "V": set_parent([Link("D1", D(1990, 1, 1))], "C", D(2026, 6, 1)),
    }
    paths = compute_paths(links)
    assert [(p.path, p.valid_from, p.valid_to) for p in paths["V"]] == [
        ("/LA/D1/V/", FAR_PAST, D(2026, 6, 1)),
        ("/LA/D2/C/V/", D(2026, 6, 1), None),
    ]
    assert [(p.path, p.valid_from) for p in paths["C"]] == [("/LA/D2/C/", FAR_PAST)]


def test_a_parent_placed_under_its_child_before_its_own_first_link_is_a_cycle():
    # B under A from 2000, A's first link (under B) from 2010: A holds from the beginning
    links = {"LA": [Link(None, D(1975, 1, 1))],
             "A": [Link("B", D(2010, 1, 1))],
             "B": [Link("A", D(2000, 1, 1), D(2005, 1, 1)), Link("LA", D(2005, 1, 1))]}
    with pytest.raises(CycleError) as err:
        compute_paths(links)
    assert set(err.value.units) == {"A", "B"}
