"""deploy/: the alert rules and Prometheus config pass promtool, the rules' own unit
tests pass, and every metric the rules and the dashboard use is one statnet exports."""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:  # never a skip: `make test` installs it (scripts/ensure-tools)
        pytest.fail("promtool is missing: install Debian's prometheus package (make test does)", pytrace=False)
    return path


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_rules(promtool):
    done = run(promtool, "check", "rules", str(DEPLOY / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_fire_when_they_should(promtool):
    done = run(promtool, "test", "rules", str(DEPLOY / "alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_prometheus_config(promtool):
    # as it stands in deploy/: the rules are named beside the config, where docker-compose
    # mounts them too
    done = run(promtool, "check", "config", str(DEPLOY / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_accepts_the_alertmanager_config():
    amtool = shutil.which("amtool")
    if amtool is None:  # never a skip: `make test` installs it (scripts/ensure-tools)
        pytest.fail("amtool is missing: install Debian's prometheus-alertmanager package (make test does)",
                    pytrace=False)
    done = run(amtool, "check-config", str(DEPLOY / "alertmanager.yml"))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def exported() -> set[str]:
    """Every statnet_* metric name declared in the code (counters without their _total)."""
    names = set()
    for path in list((ROOT / "shared").rglob("*.py")) + list((ROOT / "services").rglob("*.py")):
        names |= set(re.findall(r'"(statnet_[a-z_]+)"', path.read_text(encoding="utf-8")))
    return names


def base(name: str) -> str:
    return re.sub(r"_(total|bucket|count|sum)$", "", name)


def used_in(text: str) -> set[str]:
    return {base(n) for n in re.findall(r"\b(statnet_[a-z_]+)", text)}


def test_rules_and_dashboard_use_only_metrics_statnet_exports():
    known = exported()
    rules = used_in((DEPLOY / "alerts.yml").read_text())
    dashboard = json.loads((DEPLOY / "grafana" / "statnet.json").read_text())
    queries = used_in(" ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"]))
    assert rules - known == set() and queries - known == set()
    # the contract's metrics are all on the dashboard
    for name in ("statnet_submissions", "statnet_data_values", "statnet_validation_violations",
                 "statnet_late_returns", "statnet_notifications", "statnet_event_handler_seconds",
                 "statnet_dead_letters"):
        assert name in queries, name


def test_the_nameko_config_for_plain_nameko_run_is_what_statnet_run_uses(monkeypatch):
    """deploy/nameko.yaml (for `nameko run --config`) says what Settings.to_nameko says."""
    import yaml
    from nameko.cli.main import setup_yaml_parser

    from shared.config import NAMEKO_KEY, Settings

    monkeypatch.setenv("AMQP_URI", "amqp://u:p@mq:5672/x")
    monkeypatch.setenv("STATNET_HTTP", "0.0.0.0:9000")
    setup_yaml_parser()
    with open(DEPLOY / "nameko.yaml") as f:
        config = yaml.load(f, Loader=yaml.SafeLoader)
    expected = Settings.from_env().to_nameko()
    del expected[NAMEKO_KEY]  # under plain nameko, statnet reads its settings from the environment
    assert config == expected
