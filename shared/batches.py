"""Splitting a batch of returns so that set-based statements stay exact.

A batched handler (``@subscribe(..., batch=N)``) handles its returns in
submission order. Where two returns of a batch are about the same thing (one
org unit's values sent twice, say), the later must see what the earlier left,
exactly as if each had come alone; returns about different things can share
one statement. ``disjoint_runs`` cuts the batch into consecutive runs of
returns that share nothing.
"""
from __future__ import annotations

from typing import Callable, Hashable, Iterable, TypeVar

T = TypeVar("T")


def disjoint_runs(items: Iterable[T], keys_of: Callable[[T], set[Hashable]]) -> list[list[T]]:
    """Consecutive runs of ``items`` in which no two share a key; order is kept."""
    runs: list[list[T]] = []
    taken: set[Hashable] = set()
    for item in items:
        keys = keys_of(item)
        if not runs or keys & taken:
            runs.append([])
            taken = set()
        runs[-1].append(item)
        taken |= keys
    return runs
