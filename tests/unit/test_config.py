import pytest

from shared.config import ConfigError, Settings


def test_defaults_are_the_contracts():
    s = Settings.from_env({})
    assert s.amqp_uri == "amqp://guest:guest@127.0.0.1:5672/"
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/statnet"
    assert s.http_address == "127.0.0.1:8000"
    assert s.admin_token is None
    assert (s.smtp_host, s.smtp_port, s.smtp_from) == ("127.0.0.1", 8025, "statnet@localhost")
    assert s.alert_webhook is None
    assert s.reporting_start_date is None  # every period of the look-back is chased


def test_environment_overrides():
    s = Settings.from_env({"AMQP_URI": "amqp://u:p@mq:5672/x", "DATABASE_URL": "postgresql://db/x",
                           "STATNET_HTTP": "0.0.0.0:9000", "STATNET_ADMIN_TOKEN": "t", "SMTP_PORT": "25",
                           "STATNET_ALERT_WEBHOOK": "http://hook"})
    assert (s.http_host, s.http_port, s.smtp_port, s.admin_token) == ("0.0.0.0", 9000, 25, "t")
    assert s.to_nameko()["WEB_SERVER_ADDRESS"] == "0.0.0.0:9000"
    assert s.to_nameko()["AMQP_URI"] == "amqp://u:p@mq:5672/x"


@pytest.mark.parametrize("env, names", [
    ({"SMTP_PORT": "smtp"}, ["SMTP_PORT", "smtp"]),
    ({"STATNET_HTTP": "8000"}, ["STATNET_HTTP", "8000"]),
    ({"STATNET_QUEUE_TYPE": "stream"}, ["STATNET_QUEUE_TYPE", "stream"]),
    ({"DATABASE_URL": "mysql://x"}, ["DATABASE_URL", "mysql://x"]),
    ({"STATNET_DB_POOL": "0"}, ["STATNET_DB_POOL", "0"]),
    ({"STATNET_REPORTING_START": "2026-02-30"}, ["STATNET_REPORTING_START", "2026-02-30", "YYYY-MM-DD"]),
    ({"STATNET_REPORTING_START": "20260201"}, ["STATNET_REPORTING_START", "20260201"]),
    # ports past 65535: a traceback from bind() at start, or e-mails failing later
    ({"STATNET_HTTP": "127.0.0.1:99999"}, ["STATNET_HTTP", "127.0.0.1:99999", "1-65535"]),
    ({"STATNET_HTTP": "127.0.0.1:0"}, ["STATNET_HTTP", "127.0.0.1:0"]),
    ({"STATNET_METRICS_PORT": "99999"}, ["STATNET_METRICS_PORT", "99999", "at most 65535"]),
    ({"SMTP_PORT": "70000"}, ["SMTP_PORT", "70000", "at most 65535"]),
    ({"STATNET_ALERT_WEBHOOK": "notaurl"}, ["STATNET_ALERT_WEBHOOK", "notaurl", "http://"]),
    ({"SMTP_SECURITY": "ssl"}, ["SMTP_SECURITY", "ssl", "starttls"]),
    # a login half given would fail every alert at the relay, found only when one is due
    ({"SMTP_USERNAME": "statnet"}, ["SMTP_USERNAME", "SMTP_PASSWORD"]),
    ({"SMTP_PASSWORD": "secret"}, ["SMTP_USERNAME", "SMTP_PASSWORD"]),
])
def test_a_bad_setting_is_named_with_its_value(env, names):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    for name in names:
        assert name in str(err.value)


def test_the_relays_login_is_read_and_its_password_never_shown():
    s = Settings.from_env({"SMTP_SECURITY": "starttls", "SMTP_USERNAME": "statnet@luangnamtha.la",
                           "SMTP_PASSWORD": "ລະຫັດ-secret"})
    assert (s.smtp_security, s.smtp_username, s.smtp_password) == ("starttls", "statnet@luangnamtha.la",
                                                                   "ລະຫັດ-secret")
    assert "secret" not in repr(s)
    assert Settings.from_env({}).smtp_security == "none"  # the contract's plain relay on 8025


def test_a_process_keeps_the_database_connections_it_is_given(monkeypatch):
    """One service per container: six containers of 30 (+10) connections passed PostgreSQL's 100."""
    from shared import db

    monkeypatch.setenv("STATNET_DB_POOL", "4")
    url = "postgresql://postgres@127.0.0.1:5432/statnet_pool_size_test"
    monkeypatch.setattr(db, "_engines", {})
    engine = db.engine_for(url)  # made, never connected
    assert (engine.pool.size(), engine.pool._max_overflow) == (4, 1)
    assert Settings.from_env({"STATNET_DB_POOL": "8"}).db_pool == 8


def test_a_metrics_port_in_use_is_named_not_a_traceback():
    import socket

    from shared import health

    taken = socket.socket()
    taken.bind(("", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"STATNET_METRICS_PORT={port} is already in use"):
            health.serve(Settings.from_env({"STATNET_METRICS_PORT": str(port)}))
    finally:
        taken.close()
