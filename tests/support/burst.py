"""A burst of returns sent the way district systems send them.

Each return carries its own Idempotency-Key, and a client that gets no
answer, or a 5xx, sends it again with the same key until it is acknowledged.
That is the client half of "nothing lost, nothing twice": the server half is
what the fault tests check.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import eventlet

from tests.support.client import Api

RETRYABLE = {500, 502, 503, 504}


@dataclass
class Burst:
    gateways: list[Api]
    returns: list[tuple[str, dict]]          # (idempotency key, body)
    concurrency: int = 8
    give_up_after: float = 300.0
    acknowledged: dict[str, str] = field(default_factory=dict)   # key -> return id
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    retries: int = 0

    def __post_init__(self):
        self._queue = list(reversed(self.returns))
        self._lock = threading.Lock()
        self._pool = eventlet.GreenPool(self.concurrency)

    def start(self) -> "Burst":
        for n in range(self.concurrency):
            self._pool.spawn(self._worker, n)
        return self

    def _next(self):
        with self._lock:
            return self._queue.pop() if self._queue else None

    def _worker(self, n: int) -> None:
        while (item := self._next()) is not None:
            key, body = item
            deadline = time.monotonic() + self.give_up_after
            attempt = 0
            while True:
                api = self.gateways[(n + attempt) % len(self.gateways)]
                attempt += 1
                try:
                    r = api.submit(body, headers={"Idempotency-Key": key})
                    status, text = r.status_code, r.text
                except Exception as exc:  # connection refused or cut: the server is down
                    status, text = None, repr(exc)
                if status == 202:
                    with self._lock:
                        self.acknowledged[key] = r.json()["id"]
                    break
                if status is not None and status not in RETRYABLE:
                    with self._lock:
                        self.refused[key] = (status, text)
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{key} still not acknowledged: {status} {text[:300]}")
                with self._lock:
                    self.retries += 1
                time.sleep(0.2)

    def wait_acknowledged(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.acknowledged)} of {count} acknowledged")
            time.sleep(0.05)

    def finish(self) -> "Burst":
        self._pool.waitall()
        assert not self.refused, f"refused: {list(self.refused.items())[:3]}"
        assert len(self.acknowledged) == len(self.returns)
        return self
