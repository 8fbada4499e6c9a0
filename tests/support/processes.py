"""Real processes for fault tests: statnet itself, and a private RabbitMQ node.

A test that kills statnet, restarts the broker or drops database connections
needs them as separate processes it can hurt. ``StatnetProcess`` runs
``statnet run [services]`` like an operator would. ``PrivateBroker`` starts a
RabbitMQ node of the test's own on another port (or uses the test's
container), so ``stop_app``/``start_app`` disturb nobody else.
"""
from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile

import sqlalchemy as sa

from shared.db import engine_for
from shared.periods import today
from tests.support.client import Api, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]


class StatnetProcess:
    def __init__(self, settings, services=(), http_address=None, name="statnet", **env):
        self.settings = settings
        self.services = tuple(services)
        self.http_address = http_address or settings.http_address
        self.name = name
        self.env = {**os.environ, "AMQP_URI": settings.amqp_uri, "DATABASE_URL": settings.database_url,
                    "STATNET_HTTP": self.http_address, "STATNET_ADMIN_TOKEN": settings.admin_token,
                    "SMTP_HOST": settings.smtp_host, "SMTP_PORT": str(settings.smtp_port),
                    "STATNET_LOG_FORMAT": "json", "STATNET_DEADLINE_CHECK_SECONDS": "86400",
                    **{k: str(v) for k, v in env.items()}}
        self.log_path = pathlib.Path(tempfile.mkdtemp(prefix="statnet-proc-")) / f"{name}.log"
        # kept while the test session runs (a failing test's log can be read), gone after it
        atexit.register(shutil.rmtree, self.log_path.parent, True)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def api(self) -> Api:
        return Api(f"http://{self.http_address}", self.settings.admin_token)

    def start(self, wait: bool = True) -> "StatnetProcess":
        self.starts += 1
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.orphan_guard", "run", *self.services],
                                     env=self.env, stdout=log, stderr=log, cwd=ROOT)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def _ready_lines(self) -> int:
        n = 0
        for line in self.log_text().splitlines():
            try:
                if json.loads(line).get("message", "").startswith("statnet running"):
                    n += 1
            except ValueError:
                continue
        return n

    def wait_ready(self, timeout: float = 90) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return self._ready_lines() >= self.starts

        wait_until(ready, timeout=timeout, interval=0.2, message=f"{self.name} to start")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flushing; what the kernel does to a crashed process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM: finish in-flight work, stop taking new messages, exit."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(30)


def cli(settings, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMQP_URI": settings.amqp_uri, "DATABASE_URL": settings.database_url,
           "STATNET_LOG_FORMAT": "text"}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


class PrivateBroker:
    """A RabbitMQ node for one test module, which it may stop and start at will."""

    def __init__(self, backend):
        self.backend = backend
        self.container = None
        if backend.containers:
            from testcontainers.rabbitmq import RabbitMqContainer

            self.container = RabbitMqContainer("rabbitmq:3.13").start()
            self.port = int(self.container.get_exposed_port(5672))
            self.host = self.container.get_container_host_ip()
            self.ctl = ["docker", "exec", self.container.get_wrapped_container().id, "rabbitmqctl"]
        else:
            self.host, self.port = "127.0.0.1", _free_port()
            self.node = f"statnet_test_{self.port}@localhost"
            self.dir = pathlib.Path(tempfile.mkdtemp(prefix="statnet-rmq-"))
            (self.dir / "mnesia").mkdir()
            (self.dir / "log").mkdir()
            (self.dir / "plugins").write_text("[].\n")
            (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
                                                    "loopback_users = none\n")
            _run(["chown", "-R", "rabbitmq", str(self.dir)])
            env = (f"HOME=/var/lib/rabbitmq RABBITMQ_NODENAME={self.node} "
                   f"RABBITMQ_DIST_PORT={_free_port()} RABBITMQ_CONFIG_FILE={self.dir}/rabbitmq.conf "
                   f"RABBITMQ_MNESIA_BASE={self.dir}/mnesia RABBITMQ_LOG_BASE={self.dir}/log "
                   f"RABBITMQ_ENABLED_PLUGINS_FILE={self.dir}/plugins")
            server = shutil.which("rabbitmq-server")
            if not server or not pathlib.Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
                raise RuntimeError("a private RabbitMQ node needs rabbitmq-server installed")
            _run(["su", "rabbitmq", "-s", "/bin/sh", "-c",
                  f"cd /var/lib/rabbitmq && env {env} /usr/lib/rabbitmq/bin/rabbitmq-server -detached"])
            self.ctl = [shutil.which("rabbitmqctl"), "-n", self.node]
        self.wait_up()

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def wait_up(self, timeout: float = 120) -> None:
        wait_until(self._listening, timeout=timeout, interval=0.3, message="private RabbitMQ node up")

    def stop_app(self) -> None:
        _run(self.ctl + ["stop_app"])
        wait_until(lambda: not self._listening(), timeout=60, interval=0.2, message="RabbitMQ app stopped")

    def start_app(self) -> None:
        _run(self.ctl + ["start_app"])
        self.wait_up()

    def close(self) -> None:
        if self.container is not None:
            self.container.stop()
        else:
            subprocess.run(self.ctl + ["stop"], capture_output=True, timeout=120)
            shutil.rmtree(self.dir, ignore_errors=True)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr or done.stdout}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def judged_by(settings) -> set[tuple]:
    """(as of, reporting start) of the latest deadline check, as the late gauge's table says."""
    with engine_for(settings.database_url).connect() as conn:
        return {tuple(r) for r in conn.execute(sa.text("SELECT as_of, reporting_start FROM notify.late_count"))}


def restarted_live_from(statnet: StatnetProcess, start: str) -> None:
    """Restarted with STATNET_REPORTING_START=``start``, once the check it makes at start has
    run: a check the test asks for next would race it for the late gauge."""
    statnet.kill()
    statnet.env["STATNET_REPORTING_START"] = start
    statnet.start()
    # checked at start, the deadline timer's interval (a day here) notwithstanding
    wait_until(lambda: judged_by(statnet.settings) == {(today(), dt.date.fromisoformat(start))},
               timeout=30, message=f"a deadline check judged by the start {start}")
