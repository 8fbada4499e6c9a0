"""The container statnet's services run in: nameko's, without a reference cycle per worker,
and ready to be started by plain ``nameko run --config deploy/nameko.yaml``."""
from __future__ import annotations

from nameko.containers import ServiceContainer


class Container(ServiceContainer):
    """nameko's ``ServiceContainer``, whose workers let go of their service instance once
    torn down.

    A worker's service instance holds its dependencies (``self.db``, RPC proxies, the
    replica), several of which hold the worker context, which holds the instance: every
    worker ended as a reference cycle that only Python's cyclic collector could free, and
    with it whatever the context held (a batch of events with their values, a request and
    its body). Workers live across I/O, so these outlived the young collections and were
    promoted until a full collection freed them (tests/bench/RESULTS.md). Nothing uses the
    instance after teardown (nameko's ``_run_worker`` ends there), so dropping the
    context's reference to it breaks the cycle and reference counting frees the worker
    at once.
    """

    def _worker_teardown(self, worker_ctx):
        try:
            super()._worker_teardown(worker_ctx)
        finally:
            worker_ctx.service = None

    def start(self):
        """Under plain ``nameko run`` (no ``statnet run`` before it), do what the runner
        does first: statnet's log format, nameko's fixes, the database and this service's
        schema, the topology; and, with ``STATNET_METRICS_PORT``, its own ``/metrics``
        (once per process), so Prometheus sees it as it sees ``statnet run <service>``."""
        from shared import serialization
        from shared.config import NAMEKO_KEY

        if NAMEKO_KEY not in self.config and self.config.get("serializer") == serialization.NAME:
            from services.runner import prepare
            from shared import compat, logs
            from shared.config import Settings

            settings = Settings.of(self)
            logs.configure(settings.log_format)
            compat.apply()
            prepare(settings, [self.service_name])
            if settings.metrics_port and self.service_name != "gateway":
                from shared import health

                health.serve(settings)
        super().start()

