"""RPC to a service that runs in the same process, without the broker.

The gateway calls the owning service of every route by RPC. When that
service's container lives in the gateway's own process (``statnet run``
with both, the default layout), a round trip through RabbitMQ buys nothing:
the request and reply are each JSON-encoded, published, routed, consumed and
decoded, two broker messages and four codings per HTTP request, about a fifth
of the edge process's CPU under load (profiled, tests/bench/RESULTS.md).

``call`` runs the method as a worker of the target's own container instead,
exactly as the Rpc entrypoint would (same dependencies, same worker context,
the caller's context data), and waits for its result. Nothing else changes:
the service still decides, in its own container and its own transaction. If
the service is not in this process, or its container is stopping, the
caller goes through the broker as before (``NotLocal``).

Arguments and the result are not copied through JSON: callers pass values of
their own, and the gateway encodes a reply as the wire would (dates as ISO text,
``services/gateway/http.py``), so an answer reads the same either way.
"""
from __future__ import annotations

import time

import amqp.exceptions
import eventlet
import eventlet.event
import kombu.exceptions
from nameko import rpc as nameko_rpc
from nameko.exceptions import ContainerBeingKilled, RemoteError, UnknownService
from nameko.rpc import Rpc

_containers: dict[str, object] = {}


class NotLocal(Exception):
    """The service has no running container in this process."""


def register(containers) -> None:
    """Called by the runner with the containers it started in this process."""
    for container in containers:
        _containers[container.service_name] = container


def unregister(containers) -> None:
    for container in containers:
        if _containers.get(container.service_name) is container:
            del _containers[container.service_name]


def _entrypoint(container, method: str):
    for ext in container.entrypoints:
        if isinstance(ext, Rpc) and ext.method_name == method:
            return ext
    return None


def call(service: str, method: str, args: tuple, kwargs: dict, context_data: dict | None = None):
    """``service.method(*args, **kwargs)`` in a worker of the local container; raises
    ``NotLocal`` when there is none (then use the broker)."""
    container = _containers.get(service)
    entrypoint = _entrypoint(container, method) if container is not None else None
    if entrypoint is None:
        raise NotLocal(service)
    done = eventlet.event.Event()

    def handle_result(worker_ctx, result, exc_info):
        done.send((result, exc_info))
        return result, exc_info

    try:
        container.spawn_worker(entrypoint, args, kwargs, context_data=dict(context_data or {}),
                               handle_result=handle_result)
    except ContainerBeingKilled:
        raise NotLocal(service) from None
    result, exc_info = done.wait()
    if exc_info is not None:
        raise exc_info[1].with_traceback(exc_info[2])
    return result


# The moment a caller stops waiting (epoch seconds), carried in the worker context (a
# message header through the broker): work that would commit after it is rolled back
# (``shared.delivery.Store.transaction``), so that a 503 means nothing was done. Expiry on
# the broker drops a request no worker took; this covers one taken and then held (a worker
# waiting for a pool connection for 30 s stored four returns after their 503s, a chaos
# probe's HIGH: a correction sent since would have been replaced by the stale return).
DEADLINE = "statnet_deadline"
# of the caller's timeout, what is kept for the answer's way back after the commit
REPLY_MARGIN = 1.0


class CallerGaveUp(Exception):
    """The caller stopped waiting before this work could commit: rolled back."""


def check_caller_waits(context_data: dict) -> None:
    """Raise ``CallerGaveUp`` if the caller's deadline has passed."""
    deadline = context_data.get(DEADLINE)
    if deadline is not None and time.time() > float(deadline):
        raise CallerGaveUp(f"the caller stopped waiting {time.time() - float(deadline):.1f}s ago: "
                           "rolled back, nothing was done")


# what publishing to a broker that went away raises (refused, reset, closed by the
# server, or refused at login as a vhost at its connection limit is)
BROKER_DOWN = (OSError, kombu.exceptions.OperationalError, amqp.exceptions.ConnectionError)


class Unavailable(Exception):
    """The service is not running, or did not answer within the RPC timeout."""


_RUNNING_SECONDS = 2.0   # how long an answer to "does anything consume its requests?" holds
_running: dict[str, tuple[float, bool]] = {}


def running(settings, service: str) -> bool:
    """Does any instance of ``service`` consume its RPC queue? Asked of the broker (a passive
    declare) at most every two seconds per service; True when the broker can't say (the
    request then meets the broker's own answer). Without it a request to a stopped service
    waited out the whole RPC timeout, and forty such held every worker of the gateway:
    a return for a healthy service waited a minute behind them."""
    now = time.monotonic()
    known = _running.get(service)
    if known and known[0] > now:
        return known[1]
    from shared import topology

    try:
        consumers = topology.queue_depths(settings, [f"rpc-{service}"])[f"rpc-{service}"][1]
    except Exception:  # noqa: BLE001 - the broker unreachable: let the request itself find out
        return True
    _running[service] = (now + _RUNNING_SECONDS, consumers > 0)
    return consumers > 0


def ask(proxy, service: str, method: str, *args, share: float = 1.0, **kwargs):
    """``service.method(*args, **kwargs)`` through ``proxy`` (a nameko ``RpcProxy``
    dependency): in this process when the service runs here, else through the broker,
    within the settings' RPC timeout either way (``share`` of it for a call made inside
    another one, so that the inner one is the one to say who did not answer); raises
    ``Unavailable``."""
    from shared.config import Settings

    settings = Settings.of(proxy.worker_ctx.container)
    timeout = settings.rpc_timeout * share
    # the callee's deadline: this call's, or the one this worker was given if sooner
    context = proxy.worker_ctx.data  # (``context_data`` is a copy of it, with the call stack)
    inherited = context.get(DEADLINE)
    own = time.time() + timeout - min(REPLY_MARGIN, timeout / 10)
    context[DEADLINE] = own if inherited is None else min(float(inherited), own)
    try:
        return _ask(proxy, settings, timeout, service, method, args, kwargs)
    finally:
        if inherited is None:
            context.pop(DEADLINE, None)
        else:
            context[DEADLINE] = inherited


def _ask(proxy, settings, timeout: float, service: str, method: str, args: tuple, kwargs: dict):
    try:
        with eventlet.Timeout(timeout):
            try:
                return call(service, method, args, kwargs, proxy.worker_ctx.context_data)
            except NotLocal:
                if not running(settings, service):
                    raise Unavailable(f"the {service} service is not running (no instance takes its requests)")
                try:
                    return getattr(proxy, method).call_async(*args, **kwargs).result()
                except BROKER_DOWN as exc:
                    # the request could not be sent, or the reply could not come back: a
                    # 503 to try again (with the same Idempotency-Key, a return sent twice is
                    # stored once), not a 500 (services running apart, broker restarting)
                    raise Unavailable(f"the message broker could not be reached to ask the {service} "
                                      f"service ({type(exc).__name__})") from None
    except UnknownService:
        raise Unavailable(f"the {service} service is not running") from None
    except eventlet.Timeout:
        raise Unavailable(f"the {service} service did not answer within {timeout:g}s") from None
    except Unavailable:
        raise
    except Exception as exc:
        # the service is running but its database (or broker) is not there for it: a plain
        # RPC (the registry's token lookup, which every request makes first) raised what a
        # service's own API methods answer as 503 (shared.api), and it reached the edge as
        # a 500 "internal error" while the database refused connections
        if isinstance(exc, RemoteError) and exc.exc_type == "Unavailable":
            # the service asked another that could not answer (notify's deadline check without
            # the submission service): the inner 503, not a 500 "internal error: RemoteError"
            raise Unavailable(str(exc.value)) from None
        name = _transient_name(exc)
        if name is None:
            raise
        raise Unavailable(f"the {service} service could not reach what it depends on ({name}); retry") from None


def _transient_name(exc: BaseException) -> str | None:
    """The error's name if it is a passing one (shared.events.is_transient), raised here
    (the service in this process) or in the service's own process (a ``RemoteError``
    naming it); None otherwise."""
    from shared.events import TRANSIENT_ERRORS, is_transient

    if isinstance(exc, RemoteError):
        return exc.exc_type if exc.exc_type in {cls.__name__ for cls in TRANSIENT_ERRORS} else None
    return type(exc).__name__ if is_transient(exc) else None


class RpcProxy(nameko_rpc.RpcProxy):
    """nameko's ``RpcProxy`` whose requests expire on the broker after the RPC timeout.

    A caller gives up after ``STATNET_RPC_TIMEOUT`` and answers 503; the request itself
    stayed queued, and a service coming back a minute later stored a return whose sender
    had been told it failed (with no id to follow it by). Expired, the request is dropped
    by the broker instead: a 503 means nothing was done. A request taken and then held
    past the caller's deadline is rolled back at its commit (``DEADLINE``); left is a
    commit whose answer does not come back: slower than ``REPLY_MARGIN``, or the service
    killed between its commit and its answer (a crash probe: 4 of 27 such 503s had stored
    the return). Retrying with the same ``Idempotency-Key``, or the same body, finds it."""

    def setup(self):
        from shared.config import Settings

        self.options.setdefault("expiration", Settings.of(self.container).rpc_timeout)
        super().setup()
