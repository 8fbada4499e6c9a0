"""Test fixtures: real RabbitMQ and PostgreSQL, one database and vhost per module.

Cooperative I/O first: nameko runs on eventlet, and under plain pytest nothing
monkey-patches for us any more.
"""
from shared import green

green.patch()

import secrets  # noqa: E402
import socket  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

from shared.config import Settings  # noqa: E402
from tests.support import infra  # noqa: E402
from tests.support.client import Api, wait_until  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def backend():
    try:
        b = infra.start()
    except infra.InfraError as exc:
        pytest.fail(f"no broker or database for the tests: {exc}", pytrace=False)
    yield b
    b.close()


@pytest.fixture(scope="module")
def settings(backend):
    """Settings for one module: its own database and vhost, free ports, an admin token."""
    vhost = backend.new_vhost()
    db = backend.new_database()
    s = Settings.coerce({
        "amqp_uri": backend.amqp_uri(vhost), "database_url": db,
        "http_address": f"127.0.0.1:{free_port()}", "admin_token": secrets.token_urlsafe(16),
        "smtp_host": "127.0.0.1", "smtp_port": free_port(), "log_format": "text",
        # the timer must not race the tests' own deadline checks
        "deadline_check_seconds": 86400,
    })
    yield s
    from shared.db import dispose_all

    dispose_all()
    backend.drop_database(db)
    backend.drop_vhost(vhost)


@pytest.fixture(scope="module")
def mailbox(settings):
    """A real SMTP server at the module's SMTP port; yields its maildir."""
    from shared import mailsink

    maildir = tempfile.mkdtemp(prefix="statnet-mail-")
    proc = mailsink.start(settings.smtp_host, settings.smtp_port, maildir)
    yield maildir
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(maildir, ignore_errors=True)


@pytest.fixture(scope="module")
def system(settings):
    """Every service running in this process, as ``statnet run`` runs them; yields an admin API client."""
    from services.runner import build, start_edge_last, stop_edge_first

    runner = build(settings)
    start_edge_last(runner)
    api = Api(f"http://{settings.http_address}", settings.admin_token)
    wait_until(lambda: _healthy(api), timeout=30, message="statnet /health")
    yield api
    stop_edge_first(runner)


def _healthy(api: Api) -> bool:
    try:
        return api.get("/health").status_code == 200
    except Exception:
        return False


@pytest.fixture
def uid():
    """A short unique suffix for codes, so tests in one module never collide."""
    return secrets.token_hex(3).upper()
