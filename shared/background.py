"""A background loop inside a service container: woken on demand, polling otherwise.

The outbox relay and notify's alert dispatcher are both "do a batch of
pending work now that something was committed, and every so often anyway in
case another process left some". ``Pump`` is that loop, once: it never dies
(an uncaught error in a nameko managed thread kills the whole container),
backs off while its dependency is down, and on a graceful stop finishes the
batch in hand.
"""
from __future__ import annotations

import logging

import eventlet
from eventlet.queue import Empty, Full, LightQueue
from nameko.extensions import SharedExtension

log = logging.getLogger(__name__)


class Pump(SharedExtension):
    poll_seconds = 1.0
    batch = 200
    name = "pump"

    def __init__(self):
        super().__init__()
        self._kick = LightQueue(maxsize=1)
        self._running = False
        self._gt = None

    def ready(self) -> bool:
        """Whether there is anything to run (a subclass may wait to be configured)."""
        return True

    def work(self) -> int:
        """Do one batch; return how many items it handled."""
        raise NotImplementedError

    def start(self):
        if self.ready() and self._gt is None:
            self._running = True
            self._gt = self.container.spawn_managed_thread(self._run, identifier=self.name)

    def stop(self):
        self._running = False
        self.wake()
        if self._gt is not None:
            try:
                self._gt.wait()
            finally:
                self._gt = None

    def kill(self):
        self._running = False
        if self._gt is not None:
            self._gt.kill()
            self._gt = None

    def wake(self) -> None:
        try:
            self._kick.put_nowait(True)
        except Full:
            pass  # a wake-up is already pending

    def _run(self) -> None:
        backoff = 0.5
        while self._running:
            try:
                self._kick.get(timeout=self.poll_seconds)
            except Empty:
                pass
            try:
                while self.work() >= self.batch and self._running:
                    pass
                backoff = 0.5
            except Exception as exc:
                log.warning("%s of %s failed (%s); retrying in %.1fs", self.name,
                            self.container.service_name, exc, backoff)
                eventlet.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
