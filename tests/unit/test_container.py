"""statnet's service container: a finished worker is freed by reference counting."""
import gc
import weakref

import eventlet
from nameko.containers import get_container_cls
from nameko.extensions import DependencyProvider
from nameko.testing.services import dummy, entrypoint_hook

from shared.config import Settings
from shared.container import Container


class HoldsTheWorker(DependencyProvider):
    """Like nameko's RPC proxies and statnet's own dependencies: the injected object keeps
    the worker context, so instance -> dependency -> context -> instance is a cycle."""

    def get_dependency(self, worker_ctx):
        return {"worker": worker_ctx}


class Service:
    name = "cycles"
    held = HoldsTheWorker()
    seen = []

    @dummy
    def work(self, payload):
        Service.seen.append(weakref.ref(self))
        return len(payload)


def test_statnet_runs_its_services_in_its_own_container():
    assert get_container_cls(Settings().to_nameko()) is Container


def test_a_finished_worker_and_what_it_held_are_freed_without_the_cyclic_collector():
    container = Container(Service, config={})
    container.start()
    gc.disable()  # only reference counting from here: a cycle would keep the instance alive
    try:
        with entrypoint_hook(container, "work") as work:
            assert work(["a return's values"] * 100) == 100
        eventlet.sleep(0)  # the worker's teardown, after its result, has run
        assert Service.seen and Service.seen[-1]() is None
    finally:
        gc.enable()
        container.stop()


def test_nameko_container_would_have_left_a_cycle():
    """The test above can fail: with nameko's own container the instance outlives the worker."""
    from nameko.containers import ServiceContainer

    container = ServiceContainer(Service, config={})
    container.start()
    gc.disable()
    try:
        with entrypoint_hook(container, "work") as work:
            work([])
        eventlet.sleep(0)
        assert Service.seen[-1]() is not None
    finally:
        gc.enable()
        container.stop()
