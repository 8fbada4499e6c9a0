"""Settings, read once from the environment (CONTRACT section 1).

Every service gets its settings from the nameko config dict under the key
``STATNET`` (see :meth:`Settings.to_nameko`), never from ``os.environ``
directly, so a test can run several differently configured runners in one
process.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from dataclasses import dataclass, field

from shared import serialization

NAMEKO_KEY = "STATNET"
# every service statnet runs: `statnet run` starts them all in one process
SERVICES = ("gateway", "registry", "submission", "validation", "aggregation", "notify")


class ConfigError(ValueError):
    """A setting has a value statnet cannot use; the message names both."""


def _int(name: str, raw: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={raw!r} must be at most {maximum}")
    return value


MAX_PORT = 65535  # (a port past it was a traceback from bind() at start, or e-mails failing later)


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
_ADDRESS = re.compile(r"^(?P<host>[^:]+):(?P<port>\d{1,5})$", re.ASCII)


@dataclass(frozen=True)
class Settings:
    # CONTRACT section 1
    amqp_uri: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/statnet"
    http_address: str = "127.0.0.1:8000"
    admin_token: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_from: str = "statnet@localhost"
    alert_webhook: str | None = None
    # operational knobs beyond the contract (documented in README)
    smtp_security: str = "none"          # none | starttls (then AUTH, on 587) | tls (implicit, 465)
    smtp_username: str | None = None     # AUTH LOGIN/PLAIN to the relay when set
    smtp_password: str | None = field(default=None, repr=False)
    queue_type: str = "classic"          # classic (one node) | quorum (cluster)
    delivery_limit: int = 10             # quorum queues: redeliveries before dead-lettering
    metrics_port: int | None = None      # own /metrics port when a service runs alone
    max_workers: int = 20                # concurrent workers per service container
    db_pool: int = 30                    # database connections a process keeps (a third more at peaks)
    rpc_timeout: float = 30.0            # seconds the gateway waits for a service
    reminder_days: int = 3               # REMINDER this many days before the due date
    deadline_check_seconds: int = 3600   # timer interval of the deadline check
    late_lookback_days: int = 400        # how far back the deadline check looks for late periods
    reporting_start: str | None = None   # YYYY-MM-DD: go-live; no period that ended before it is chased
    notify_retry_seconds: int = 5        # first retry of a failed alert delivery; doubles up to 10 min
    inbox_days: int = 30                 # how long a consumed event's id is kept against redelivery
    log_format: str = "json"             # json | text
    timezone: str = "Asia/Vientiane"     # where times are shown; storage is always UTC
    deadline_timer: bool = True          # notify's timed check (off in statnet demo: it checks by hand)
    extra: dict = field(default_factory=dict, compare=False)

    ENV = {
        "amqp_uri": "AMQP_URI",
        "database_url": "DATABASE_URL",
        "http_address": "STATNET_HTTP",
        "admin_token": "STATNET_ADMIN_TOKEN",
        "smtp_host": "SMTP_HOST",
        "smtp_port": "SMTP_PORT",
        "smtp_from": "SMTP_FROM",
        "alert_webhook": "STATNET_ALERT_WEBHOOK",
        "smtp_security": "SMTP_SECURITY",
        "smtp_username": "SMTP_USERNAME",
        "smtp_password": "SMTP_PASSWORD",
        "queue_type": "STATNET_QUEUE_TYPE",
        "delivery_limit": "STATNET_DELIVERY_LIMIT",
        "metrics_port": "STATNET_METRICS_PORT",
        "max_workers": "STATNET_MAX_WORKERS",
        "db_pool": "STATNET_DB_POOL",
        "rpc_timeout": "STATNET_RPC_TIMEOUT",
        "reminder_days": "STATNET_REMINDER_DAYS",
        "deadline_check_seconds": "STATNET_DEADLINE_CHECK_SECONDS",
        "late_lookback_days": "STATNET_LATE_LOOKBACK_DAYS",
        "reporting_start": "STATNET_REPORTING_START",
        "notify_retry_seconds": "STATNET_NOTIFY_RETRY_SECONDS",
        "inbox_days": "STATNET_INBOX_DAYS",
        "log_format": "STATNET_LOG_FORMAT",
    }

    @classmethod
    def from_env(cls, env=None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values: dict = {}
        for attr, var in cls.ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[attr] = raw
        values.update(overrides)
        return cls.coerce(values)

    @classmethod
    def coerce(cls, values: dict) -> "Settings":
        """Build settings from strings or typed values, checking each one."""
        out = dict(values)
        env = cls.ENV
        for attr in ("smtp_port", "delivery_limit", "max_workers", "db_pool", "reminder_days",
                     "deadline_check_seconds", "late_lookback_days", "notify_retry_seconds", "inbox_days"):
            if attr in out and not isinstance(out[attr], int):
                out[attr] = _int(env[attr], str(out[attr]), minimum=1 if attr != "reminder_days" else 0,
                                 maximum=MAX_PORT if attr == "smtp_port" else None)
        if out.get("metrics_port") not in (None, "") and not isinstance(out["metrics_port"], int):
            out["metrics_port"] = _int(env["metrics_port"], str(out["metrics_port"]), minimum=1, maximum=MAX_PORT)
        if "rpc_timeout" in out and not isinstance(out["rpc_timeout"], float):
            out["rpc_timeout"] = _float(env["rpc_timeout"], str(out["rpc_timeout"]))
        settings = cls(**out)
        settings.check()
        return settings

    def check(self) -> None:
        if not _ADDRESS.match(self.http_address) or not 0 < self.http_port <= MAX_PORT:
            raise ConfigError(f"STATNET_HTTP={self.http_address!r} must be host:port, the port 1-{MAX_PORT}")
        if self.alert_webhook is not None and not re.match(r"https?://[^/\s]+", self.alert_webhook):
            raise ConfigError(f"STATNET_ALERT_WEBHOOK={self.alert_webhook!r} must be an http:// or https:// URL")
        if self.smtp_security not in ("none", "starttls", "tls"):
            raise ConfigError(f"SMTP_SECURITY={self.smtp_security!r} must be none, starttls or tls")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ConfigError("SMTP_USERNAME and SMTP_PASSWORD go together: set both to log in to the "
                              "relay, or neither")
        if self.queue_type not in ("classic", "quorum"):
            raise ConfigError(f"STATNET_QUEUE_TYPE={self.queue_type!r} must be classic or quorum")
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"STATNET_LOG_FORMAT={self.log_format!r} must be json or text")
        if not self.amqp_uri.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"AMQP_URI={self.amqp_uri!r} must start with amqp:// or amqps://")
        if not self.database_url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
            raise ConfigError(f"DATABASE_URL={self.database_url!r} must be a postgresql:// URL")
        if self.reporting_start is not None:
            self.reporting_start_date  # noqa: B018 (checked here, at start-up)

    @property
    def reporting_start_date(self) -> dt.date | None:
        """The day statnet went live: the deadline check chases no period that ended before it
        (on the first check, every month of the look-back that no unit had sent through
        statnet, because it went on paper, was late: a dozen alerts per unit per supervisor,
        and the late-returns alert firing from the first day)."""
        if self.reporting_start is None:
            return None
        try:
            if not _DAY.match(self.reporting_start):
                raise ValueError
            return dt.date.fromisoformat(self.reporting_start)
        except ValueError:
            raise ConfigError(f"STATNET_REPORTING_START={self.reporting_start!r} is not a day (YYYY-MM-DD)") from None

    @property
    def http_host(self) -> str:
        return _ADDRESS.match(self.http_address).group("host")

    @property
    def http_port(self) -> int:
        return int(_ADDRESS.match(self.http_address).group("port"))

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def to_nameko(self) -> dict:
        """The nameko config dict for a runner of statnet services."""
        return {
            "AMQP_URI": self.amqp_uri,
            "WEB_SERVER_ADDRESS": self.http_address,
            "max_workers": self.max_workers,
            # nameko's container, minus a reference cycle per worker (shared.container)
            "SERVICE_CONTAINER_CLS": "shared.container.Container",
            "SERIALIZERS": serialization.NAMEKO_CONFIG,
            "serializer": serialization.NAME,
            "ACCEPT": [serialization.NAME, "json"],
            # fail fast on a dead broker instead of nameko's long default backoff
            "TRANSPORT_OPTIONS": {"max_retries": 3, "interval_start": 1,
                                  "interval_step": 1, "interval_max": 3},
            NAMEKO_KEY: dataclasses.asdict(self),
        }

    @classmethod
    def of(cls, container) -> "Settings":
        """The settings of a running nameko container."""
        raw = container.config.get(NAMEKO_KEY)
        if raw is None:
            # a container started by plain `nameko run`: with statnet's config file, or a
            # service that would dead-letter every event of the others and take no RPC
            if container.config.get("serializer") != serialization.NAME:
                raise RuntimeError("statnet's services speak statnet's wire format: run one with "
                                   "`statnet run <service>`, or `nameko run --config deploy/nameko.yaml "
                                   "services.<service>.service`")
            return cls.from_env(amqp_uri=container.config.get("AMQP_URI", cls.amqp_uri))
        if isinstance(raw, Settings):
            return raw
        return cls(**raw)
