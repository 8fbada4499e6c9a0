"""The org-unit hierarchy over time.

A unit's parent is a timeline of links ``(parent, valid_from, valid_to)``
(``valid_to`` exclusive, None = open). Re-parenting from a date truncates the
timeline there and appends the new parent, so every period before the move
keeps its old parent in every aggregate: DHIS2 loses that history when a
village is re-districted; statnet does not.

From the links we derive each unit's *paths*: ``/LA/03/0301/030101/`` with
the interval during which it holds. A path changes when the unit or any
ancestor moves, so a move is pushed down to every descendant. A unit's first
link holds from the beginning of time, so every unit has one place on every
day (before its opening it has no data, but its descendants may: a unit can be
moved under one that opens later).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

FAR_PAST = dt.date(1900, 1, 1)


@dataclass(frozen=True)
class Link:
    parent: str | None
    valid_from: dt.date
    valid_to: dt.date | None = None


@dataclass(frozen=True)
class Path:
    path: str
    level: int
    valid_from: dt.date
    valid_to: dt.date | None

    def as_state(self) -> dict:
        return {"path": self.path, "level": self.level, "valid_from": self.valid_from,
                "valid_to": self.valid_to}


class CycleError(ValueError):
    def __init__(self, units: list[str], on: dt.date):
        super().__init__(" -> ".join(units))
        self.units = units
        self.on = on  # the first day the units form the cycle


def set_parent(links: list[Link], parent: str | None, start: dt.date) -> list[Link]:
    """The timeline with ``parent`` from ``start`` on (earlier links kept, later ones replaced).

    A move to ``parent`` already made, dated before ``start``, is re-dated to it: the parent
    before keeps the unit until then (CONTRACT 3: the periods before ``parentFrom`` stay with
    the old parent). A later date posted to correct a move was "no change", and the months
    between stayed with the new district."""
    ordered = sorted(links, key=lambda l: l.valid_from)
    at = next((i for i, link in enumerate(ordered)
               if link.valid_from < start and (link.valid_to is None or start < link.valid_to)), None)
    if at and ordered[at].parent == parent and ordered[at - 1].valid_to == ordered[at].valid_from:
        before = ordered[at - 1]
        ordered[at - 1:] = [Link(before.parent, before.valid_from, start)]
    kept = []
    for link in ordered:
        if link.valid_from >= start:
            continue
        if link.valid_to is None or link.valid_to > start:
            link = Link(link.parent, link.valid_from, start)
        kept.append(link)
    kept.append(Link(parent, start, None))
    return merge(kept)


def merge(links: list[Link]) -> list[Link]:
    """Join adjacent links with the same parent."""
    out: list[Link] = []
    for link in sorted(links, key=lambda l: l.valid_from):
        if out and out[-1].parent == link.parent and out[-1].valid_to == link.valid_from:
            out[-1] = Link(link.parent, out[-1].valid_from, link.valid_to)
        else:
            out.append(link)
    return out


def parent_on(links: list[Link], day: dt.date) -> str | None:
    for link in links:
        if link.valid_from <= day and (link.valid_to is None or day < link.valid_to):
            return link.parent
    return None


def _clip(a_from, a_to, b_from, b_to):
    start = max(a_from, b_from)
    ends = [d for d in (a_to, b_to) if d is not None]
    end = min(ends) if ends else None
    if end is not None and end <= start:
        return None
    return start, end


def compute_paths(links: dict[str, list[Link]]) -> dict[str, list[Path]]:
    """Paths of every unit. Raises CycleError if a unit is ever its own ancestor.

    A cycle is a matter of dates: a village that left district D in July may become
    D's parent from August (links are effective-dated), and on no day is either its
    own ancestor. So each ancestor is followed only over the days the links below it
    hold (``window``); meeting a unit again on the way up, on days that are not
    empty, is a cycle on those days.
    """
    memo: dict[tuple[str, dt.date, dt.date | None], list[Path]] = {}
    visiting: list[str] = []

    def paths(code: str, lo: dt.date = FAR_PAST, hi: dt.date | None = None) -> list[Path]:
        key = (code, lo, hi)
        if key in memo:
            return memo[key]
        if code in visiting:
            raise CycleError(visiting[visiting.index(code):] + [code], lo)
        visiting.append(code)
        out: list[Path] = []
        for n, link in enumerate(sorted(links.get(code, []), key=lambda l: l.valid_from)):
            # the first link holds from the beginning: a unit may be placed under a parent
            # from before that parent's own first link (a village moved, from June, under a
            # commune opening in September); without this its data of those months had no
            # path, and stayed where they were while the unit was shown under the new one
            span = _clip(FAR_PAST if n == 0 else link.valid_from, link.valid_to, lo, hi)
            if span is None:
                continue
            if link.parent is None:
                out.append(Path(f"/{code}/", 1, *span))
                continue
            for above in paths(link.parent, *span):
                out.append(Path(f"{above.path}{code}/", above.level + 1, above.valid_from, above.valid_to))
        visiting.pop()
        memo[key] = _merge_paths(out)
        return memo[key]

    return {code: paths(code) for code in links}


def _merge_paths(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in sorted(paths, key=lambda p: p.valid_from):
        if out and out[-1].path == p.path and out[-1].valid_to == p.valid_from:
            out[-1] = Path(p.path, p.level, out[-1].valid_from, p.valid_to)
        else:
            out.append(p)
    return out
