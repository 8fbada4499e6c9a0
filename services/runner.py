"""Starting statnet services: migrate, declare the topology, run the containers.

``statnet run`` puts all six services in one process (one nameko runner, one
HTTP address owned by the gateway); ``statnet run submission`` runs one, and
several such processes share that service's queues.
"""
from __future__ import annotations

import errno
import gc
import logging
import os
import signal

import eventlet
import eventlet.event
from nameko.runners import ServiceRunner
from nameko.utils.concurrency import SpawningProxy

from shared import compat, local, migrations, topology
from shared.config import SERVICES, Settings

log = logging.getLogger(__name__)


def service_classes() -> dict:
    from services.aggregation.service import AggregationService
    from services.gateway.service import GatewayService
    from services.notify.service import NotifyService
    from services.registry.service import RegistryService
    from services.submission.service import SubmissionService
    from services.validation.service import ValidationService

    return {cls.name: cls for cls in (GatewayService, RegistryService, SubmissionService,
                                      ValidationService, AggregationService, NotifyService)}


ALL = SERVICES
STOP_SECONDS = 30


# how long the forced stop may take before the process exits without it: nameko's consumers
# wait for a broker that is gone (reconnecting for ever), and a SIGTERM with the broker down
# left the process running until the broker came back, minutes later (an operator probe).
# Exiting is as safe as a crash: nothing is acknowledged before it is committed.
KILL_SECONDS = 10


def _force(runner: ServiceRunner, seconds: float) -> None:
    log.warning("graceful stop did not finish within %gs; stopping now", seconds)
    eventlet.spawn_after(KILL_SECONDS, _exit_now)
    runner.kill()


def _exit_now() -> None:
    log.error("the forced stop did not finish within %gs either (waiting for the broker?): exiting; "
              "unacknowledged messages are redelivered", KILL_SECONDS)
    logging.shutdown()
    os._exit(1)


def prepare(settings: Settings, names=ALL) -> dict[str, tuple[str | None, str | None]]:
    """Everything a service needs before its first message: the broker topology and its
    schema (also all `statnet migrate` does); the revisions each schema was at and is at."""
    # the whole topology, not just these services': an event published by a service that
    # starts first must already have its consumers' queues to go to. Before the migrations:
    # a revision may emit events (aggregation 0016), which old instances' relays publish at
    # once, and to a consumer the version before did not have they were routed to nobody
    topology.declare_all(settings, service_classes().values())
    return {name: migrations.upgrade(settings, name) for name in names
            if name in migrations.SERVICES_WITH_SCHEMA}


def build(settings: Settings, names=ALL) -> ServiceRunner:
    compat.apply()
    classes = service_classes()
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise SystemExit(f"unknown service(s): {', '.join(unknown)}; choose from {', '.join(ALL)}")
    prepare(settings, names)
    runner = ServiceRunner(settings.to_nameko())
    for name in names:
        runner.add_service(classes[name])
    return runner


def start_edge_last(runner: ServiceRunner) -> None:
    """The services first, then the gateway (nameko's ``runner.start`` starts them all at once).

    Started together, the gateway took requests while a service beside it was still setting
    up its consumers: the first request found no local container and no consumer of the
    service's queue, and was answered 503 "not running" by a process that had just said
    ``/health`` 200 (a flaky CI run). Now the gateway listens only once every service of
    its process takes calls, in this process (``shared.local``) as over the broker."""
    inner = [c for c in runner.containers if c.service_name != "gateway"]
    edge = [c for c in runner.containers if c.service_name == "gateway"]
    SpawningProxy(inner).start()
    local.register(inner)
    SpawningProxy(edge).start()
    local.register(edge)


def stop_edge_first(runner: ServiceRunner) -> None:
    """A graceful stop: the gateway first, then the rest.

    Stopped together, every container stops consuming at once, and an HTTP request in
    flight waits on a service that no longer answers: under load a SIGTERM took the whole
    STOP_SECONDS and killed the requests it should have finished (their returns stored,
    their clients never told). The gateway stops taking requests and finishes those it
    has while the services they call still run (in this process, still called directly);
    then the services stop, each finishing its own in-flight work."""
    for container in runner.containers:
        if container.service_name == "gateway":
            container.stop()
    # from now on a call reaches a service through the broker (shared.local)
    local.unregister(runner.containers)
    runner.stop()  # (a stopped container's stop does nothing)


def _tune_gc() -> None:
    """What is loaded at start (modules, compiled statements, the service classes) lives as
    long as the process: frozen, the collector stops walking it again and again. (A larger
    young generation as well bought nothing measurable at national scale and cost 130 MB
    of peak memory: tests/bench/RESULTS.md.)"""
    gc.collect()
    gc.freeze()


def run(settings: Settings, names=ALL) -> None:
    """Run until SIGTERM or Ctrl-C; SIGTERM finishes in-flight work first."""
    runner = build(settings, names)
    if settings.metrics_port and "gateway" not in names:
        from shared import health

        health.serve(settings)

    stopping = []
    started = eventlet.event.Event()

    def stop_once_started():
        # a SIGTERM while the services start waits for them: stopped mid-start, the start
        # went on after the stop (the gateway answered after it, a stopped container was
        # registered for in-process calls) and the forced kill ended it
        started.wait()
        stop_edge_first(runner)

    def shutdown(signum, frame):
        # signal handlers can't use eventlet primitives: stop from a green thread.
        # A graceful stop finishes in-flight work, but waits on the broker; it gets
        # STOP_SECONDS, and a second signal ends it at once.
        if stopping:
            eventlet.spawn_n(runner.kill)
            return
        stopping.append(signum)
        eventlet.spawn_n(stop_once_started)
        # longer than a request may wait on another service: an in-flight request ends with
        # its answer (a 503 at worst), not with a connection cut when the time is up
        grace = max(STOP_SECONDS, settings.rpc_timeout + 5)
        eventlet.spawn_after(grace, _force, runner, grace)

    signal.signal(signal.SIGTERM, shutdown)
    log.info("statnet starting: %s", ", ".join(names))
    start_edge_last(runner)
    started.send()
    _tune_gc()
    log.info("statnet running: %s%s", ", ".join(names),
             f" (HTTP on {settings.http_address})" if "gateway" in names else "")
    waiter = eventlet.spawn(runner.wait)
    while True:
        try:
            waiter.wait()
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        except KeyboardInterrupt:
            try:
                stop_edge_first(runner)
            except KeyboardInterrupt:
                runner.kill()
        else:
            break
    log.info("statnet stopped: %s", ", ".join(names))
