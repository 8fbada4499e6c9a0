"""Metrics read at scrape time: queue depths, outbox backlog, pending alerts, completeness.

Counters and histograms (``shared.metrics``) move as work happens; these are
states that live in RabbitMQ or PostgreSQL, read when Prometheus asks. One
collector is registered per process; each running service adds its *sources*
to it while it runs (``Source`` dependency), so ``statnet run`` serves every
service's series once, on one ``/metrics``, and a service alone serves its own.
A source that fails (database down) is skipped and counted in
``statnet_scrape_errors_total{source}``: a scrape never fails as a whole. Whether each
service reaches its database at all is ``statnet_database_up{service}``, from the
outbox's source (``shared.delivery``), so an outage is a series that says 0, not
series that vanish.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from nameko.extensions import DependencyProvider
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

scrape_errors_total = Counter("statnet_scrape_errors", "Scrape-time metric sources that failed", ["source"])

Families = Iterable[GaugeMetricFamily]


class _Process(Collector):
    def __init__(self):
        # each key's sources, newest last: a second container of a service in one process
        # (a test's, beside `statnet run`'s) answers while it runs, and when it stops the
        # first one answers again instead of nothing
        self.sources: dict[tuple[str, str], list[Callable[[], Families]]] = {}
        self.lock = threading.Lock()

    def collect(self):
        with self.lock:
            sources = [(key, fns[-1]) for key, fns in self.sources.items() if fns]
        merged: dict[str, GaugeMetricFamily] = {}
        for (name, service), fn in sources:
            try:
                for family in fn():
                    # two services may feed one family (outbox backlog of each): merge their samples
                    if family.name in merged:
                        merged[family.name].samples.extend(family.samples)
                    else:
                        merged[family.name] = family
            except Exception as exc:
                count_failure((name, service), exc)
        yield from merged.values()

    def describe(self):
        return []  # unchecked: the families depend on which services run


PROCESS = _Process()
REGISTRY.register(PROCESS)


def count_failure(key: tuple[str, str], exc: BaseException) -> None:
    name, service = key
    scrape_errors_total.labels(source=f"{service}.{name}").inc()
    log.warning("metric source %s of %s failed: %s", name, service, exc)


def add_source(key: tuple[str, str], fn: Callable[[], Families]) -> None:
    with PROCESS.lock:
        PROCESS.sources.setdefault(key, []).append(fn)


def remove_source(key: tuple[str, str], fn: Callable[[], Families]) -> None:
    with PROCESS.lock:
        fns = PROCESS.sources.get(key, [])
        if fn in fns:
            fns.remove(fn)
        if not fns:
            PROCESS.sources.pop(key, None)


class Source(DependencyProvider):
    """``source = Source(fn)`` on a service: ``fn(container)`` yields gauge families at each
    scrape while the service runs. ``cache_seconds`` keeps an expensive answer for a while."""

    def __init__(self, fn: Callable, cache_seconds: float = 0):
        self.fn = fn
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, list] | None = None

    def start(self):
        self.key = (self.fn.__name__, self.container.service_name)
        add_source(self.key, self._families)

    def stop(self):
        remove_source(self.key, self._families)

    kill = stop

    def _families(self) -> list:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        families = list(self.fn(self.container))
        self._cached = (now, families)
        return families

    def get_dependency(self, worker_ctx):
        return None


def provider(container, cls):
    """The container's dependency provider of type ``cls`` (its Database, its Replica)."""
    return next(d for d in container.dependencies if isinstance(d, cls))


def gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for *values, value in rows:
        family.add_metric([str(v) for v in values], float(value))
    return family
