"""Splitting a batch of returns so that set-based statements stay exact.

A batched handler (``@subscribe(..., batch=N)``) handles its returns in
submission order. Where two returns of a batch are about the same thing (one
org unit's values sent twice, say), the later must see what the earlier left,
exactly as if each had come alone; returns about different things can share
one statement. ``disjoint_runs`` cuts the batch into consecutive runs of
returns that share nothing.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Hashable, Iterable, TypeVar

import eventlet.event
from nameko.extensions import DependencyProvider

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


class Turn:
    """One batch's place in ``InOrder``: ``wait()`` before taking its locks, ``locked()``
    once it holds them."""

    def __init__(self, before: eventlet.event.Event | None, done: eventlet.event.Event):
        self._before, self._done = before, done

    def wait(self) -> None:
        if self._before is not None:
            self._before.wait()

    def locked(self) -> None:
        if not self._done.ready():
            self._done.send()


class Turnstile:
    def __init__(self):
        self._issued = 0
        self._locked: dict[int, eventlet.event.Event] = {}

    @contextlib.contextmanager
    def turn(self):
        """Taken first thing in the handler (workers start in delivery order): the batch
        delivered before this one has its locks before this one asks for its own. A batch
        that fails before its locks lets the next go."""
        mine = self._issued
        self._issued += 1
        done = self._locked[mine] = eventlet.event.Event()
        turn = Turn(self._locked.get(mine - 1), done)
        try:
            yield turn
        finally:
            # (one that failed before its locks lets the next go once its own turn came:
            # the order holds through it)
            try:
                turn.wait()
            finally:  # (killed while waiting here, it still lets the next go)
                turn.locked()
                self._locked.pop(mine, None)  # (the next holds it already, if it came)


class InOrder(DependencyProvider):
    """``self.in_order.turn()``: batches of a handler take their locks in the order they
    were delivered, in this process.

    Two batches run beside each other; whichever asked for a place's lock first judged
    its returns first, and a batch that had work to do before its locks (validation asking
    aggregation for a unit's history) let the next batch, with a later return for the
    same place, be judged first, without the earlier return's values (a chaos probe's
    finding: the later return rejected on a value the earlier had replaced)."""

    def setup(self):
        self.turnstile = Turnstile()

    def get_dependency(self, worker_ctx):
        return self.turnstile
