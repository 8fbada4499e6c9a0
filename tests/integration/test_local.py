"""Calls to a service in the same process (shared.local): a worker of the service's own
container, as the Rpc entrypoint would run it, and the broker only when there is none."""
from __future__ import annotations

import pytest
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.runners import ServiceRunner

from shared import local


class CallStack(DependencyProvider):
    """What the worker saw of its context: proves it ran as a worker of its container."""

    def get_dependency(self, worker_ctx):
        return list(worker_ctx.call_id_stack)


class Target:
    name = "local_target"
    stack = CallStack()

    @rpc
    def echo(self, text, *, twice=False):
        return {"text": text * (2 if twice else 1), "stack": self.stack}

    @rpc
    def refuse(self, why):
        raise ValueError(why)


@pytest.fixture
def runner(settings):
    runner = ServiceRunner(settings.to_nameko())
    runner.add_service(Target)
    runner.start()
    local.register(runner.containers)
    yield runner
    local.unregister(runner.containers)
    runner.kill()


def test_a_local_service_runs_the_call_in_a_worker_of_its_own_container(runner):
    got = local.call("local_target", "echo", ("ລາຍງານ",), {"twice": True},
                     {"call_id_stack": ["gateway.post_data_value_set.1"]})
    assert got["text"] == "ລາຍງານລາຍງານ"
    # the caller's context travels as with RPC: the worker's call id is stacked on it
    assert got["stack"][0] == "gateway.post_data_value_set.1"
    assert got["stack"][-1].startswith("local_target.echo.")


def test_the_services_exception_reaches_the_caller(runner):
    with pytest.raises(ValueError, match="no such unit"):
        local.call("local_target", "refuse", ("no such unit",), {})


def test_a_service_or_method_not_in_this_process_is_not_local(runner):
    with pytest.raises(local.NotLocal):
        local.call("submission", "receive", (), {})
    with pytest.raises(local.NotLocal):
        local.call("local_target", "no_such_method", (), {})


def test_a_stopping_container_is_not_called_locally(runner):
    local.unregister(runner.containers)
    with pytest.raises(local.NotLocal):
        local.call("local_target", "echo", ("x",), {})
    local.register(runner.containers)
    runner.kill()  # killed without unregistering: the container refuses new workers
    with pytest.raises(local.NotLocal):
        local.call("local_target", "echo", ("x",), {})
