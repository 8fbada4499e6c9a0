"""Real RabbitMQ and PostgreSQL for the tests: never mocked.

Where a Docker engine is reachable, testcontainers starts both for the test
session. Otherwise the services named by ``AMQP_URI`` and ``DATABASE_URL``
(the contract's defaults: the local ones) are used. Either way each test
module gets its own database and its own RabbitMQ vhost, so modules can't
see each other's messages or rows, and nothing is left behind.

When neither is reachable the tests fail with a message saying so; they
never skip.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/statnet"


class InfraError(RuntimeError):
    pass


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=3):
            return True
    except OSError:
        return False


@dataclass
class Backend:
    amqp_base: str        # broker URI without vhost
    database_base: str    # database URL of a maintenance-capable database
    rabbitmqctl: list     # command prefix to run rabbitmqctl
    containers: list

    def new_vhost(self) -> str:
        name = f"statnet_test_{uuid.uuid4().hex[:10]}"
        user = urlsplit(self.amqp_base).username or "guest"
        for args in (["add_vhost", name], ["set_permissions", "-p", name, user, ".*", ".*", ".*"]):
            done = subprocess.run(self.rabbitmqctl + args, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise InfraError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
        return name

    def drop_vhost(self, name: str) -> None:
        subprocess.run(self.rabbitmqctl + ["delete_vhost", name], capture_output=True, timeout=120)

    def amqp_uri(self, vhost: str) -> str:
        parts = urlsplit(self.amqp_base)
        return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.database_base)
        return urlunsplit(parts._replace(path="/" + name))

    def new_database(self) -> str:
        from shared.db import ensure_database

        name = f"statnet_test_{uuid.uuid4().hex[:10]}"
        ensure_database(self.database_url(name))
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        from shared.db import drop_database

        drop_database(url)

    def close(self) -> None:
        for c in self.containers:
            c.stop()


def _docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def start() -> Backend:
    if _docker_reachable() and os.environ.get("STATNET_TEST_NO_DOCKER") != "1":
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        pg = PostgresContainer("postgres:15", username="postgres", password="postgres", dbname="postgres")
        pg.start()
        mq = RabbitMqContainer("rabbitmq:3.13")
        mq.start()
        db = (f"postgresql://postgres:postgres@{pg.get_container_host_ip()}:"
              f"{pg.get_exposed_port(5432)}/postgres")
        amqp = f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"
        ctl = ["docker", "exec", mq.get_wrapped_container().id, "rabbitmqctl"]
        return Backend(amqp, db, ctl, [mq, pg])

    amqp = os.environ.get("AMQP_URI", DEFAULT_AMQP)
    db = os.environ.get("DATABASE_URL", DEFAULT_DB)
    problems = []
    if not _reachable(amqp, 5672):
        problems.append(f"RabbitMQ is not reachable at {amqp} (start it: rabbitmq-server -detached)")
    if not _reachable(db, 5432):
        problems.append(f"PostgreSQL is not reachable at {db} (start it: pg_ctlcluster "
                        "--skip-systemctl-redirect $(ls /etc/postgresql) main start)")
    if problems:
        raise InfraError("; ".join(problems))
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise InfraError("rabbitmqctl is not on PATH: the tests need it to give each module its own vhost")
    try:
        from sqlalchemy.engine import make_url

        from shared.db import engine_for_maintenance, sqlalchemy_url

        engine_for_maintenance(make_url(sqlalchemy_url(db))).connect().close()
    except Exception as exc:
        raise InfraError(f"PostgreSQL at {db} refused the connection: {exc}") from None
    return Backend(amqp, db, [ctl], [])
