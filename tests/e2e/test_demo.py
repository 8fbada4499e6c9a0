"""``statnet demo``, the README's main job, as a user runs it: its own process on the local
broker and database, its own mail server; what it prints is checked against what was
stored, and a second run of the same month counts nothing twice."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

from shared import mailsink
from shared.db import engine_for
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

MONTH, YEAR = "202609", "2025"


def demo(settings, tmp_path, smtp_port: int, http: str | None = None, **extra_env) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMQP_URI": settings.amqp_uri, "DATABASE_URL": settings.database_url,
           "STATNET_HTTP": http or settings.http_address, "SMTP_PORT": str(smtp_port), "TMPDIR": str(tmp_path),
           **extra_env}
    env.pop("STATNET_ADMIN_TOKEN", None)  # the demo makes one for itself
    return subprocess.run([sys.executable, "-m", "services.cli", "demo", "--month", MONTH], env=env,
                          capture_output=True, text=True, timeout=400)


def total(out: str, period: str, label: str) -> int:
    [value] = re.findall(rf"^  {period}\s+{re.escape(label)}\s+([\d,]+)$", out, re.M)
    return int(value.replace(",", ""))


def test_the_demo_reports_what_was_stored_and_a_second_run_counts_nothing_twice(settings, tmp_path):
    smtp_port = free_port()
    first = demo(settings, tmp_path, smtp_port)
    out = first.stdout
    assert first.returncode == 0, out[-3000:] + first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    assert "Luang Namtha (ຫຼວງນ້ຳທາ)" in out

    sent = int(re.search(r"^Returns sent: (\d+)", out, re.M).group(1))
    processed = dict((s, int(n)) for n, s in re.findall(r"(\d+) (AGGREGATED|REJECTED|RECEIVED|VALIDATED)",
                                                          re.search(r"^Returns processed.*$", out, re.M).group(0)))
    assert set(processed) == {"AGGREGATED", "REJECTED"} and sum(processed.values()) == sent
    rejected_lines = out.split("Rejected (nothing of these is in any total):\n")[1].split("\n\n")[0].splitlines()
    assert len(rejected_lines) == processed["REJECTED"]

    with engine_for(settings.database_url).connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM submission.return")).scalar()
        population = conn.execute(sa.text(
            "SELECT sum(value) FROM aggregation.data_value WHERE data_element = 'POP' AND period = :y"),
            {"y": YEAR}).scalar()
        opd = conn.execute(sa.text(
            "SELECT sum(value) FROM aggregation.data_value WHERE data_element = 'OPD' AND period = :m"),
            {"m": MONTH}).scalar()
    assert stored == sent
    # the province totals printed are the values stored, rejected returns' not among them
    assert total(out, YEAR, "Population") == population
    assert total(out, YEAR, "Population (M)") + total(out, YEAR, "Population (F)") == population
    assert total(out, MONTH, "Outpatient visits") == opd

    # alerts really went out by SMTP, to the mail server the demo started and stopped again
    delivered = int(re.search(r"^(\d+) e-mail\(s\) delivered to the local SMTP server \((\S+)\)", out, re.M)
                    .group(1))
    maildir = re.search(r"delivered to the local SMTP server \((\S+)\)", out).group(1)
    assert delivered > 0 and len(mailsink.read(maildir)) == delivered
    assert not mailsink.listening("127.0.0.1", smtp_port)
    assert any("ຮຽນ" in m.get_content() for m in mailsink.read(maildir))  # Lao e-mails, as sent

    second = demo(settings, tmp_path, smtp_port)
    again = second.stdout
    assert second.returncode == 0, again[-3000:] + second.stderr[-3000:]
    assert "(0 created, 0 updated" in again
    assert f"({sent} of them byte-identical to a return received in an earlier run" in again
    assert "Alerts of this run (0): none new" in again
    with engine_for(settings.database_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM submission.return")).scalar() == stored
    assert total(again, YEAR, "Population") == population


def test_the_demo_leaves_the_deadline_check_out_on_a_database_with_units_of_its_own(settings, system, tmp_path):
    """Run on a database holding other units (a province's, a test's), the demo's deadline
    check alerted the supervisors of every one of them (56,367 alerts in a probe's run): it
    runs the rest and says why it leaves the check out. Nor does its notify's timer check:
    a check due at once (here: another go-live day than the last check's) did the same."""
    assert system.import_metadata({
        "orgUnits": [{"code": "XDEMO1", "name": "A province's own unit", "nameLo": "ບ້ານ",
                      "openingDate": "2000-01-01"}],
        "dataElements": [{"code": "XDE", "name": "Its own element", "valueType": "INTEGER",
                          "aggregationType": "SUM"}],
        "dataSets": [{"code": "XDS", "name": "Its own return", "periodType": "Monthly", "dataElements": ["XDE"],
                      "orgUnits": ["XDEMO1"], "timelyDays": 5, "expiryDays": 0}],
        "focalPoints": [{"code": "XSUP", "name": "Its supervisor", "orgUnit": "XDEMO1", "role": "supervisor",
                         "email": "xsup@example.la", "language": "en"}]})["stats"]["created"] == 4
    # the province's own check, months ago
    assert system.post("/api/deadlines/check?asOf=2026-03-15").status_code == 200

    def chased() -> int:
        with engine_for(settings.database_url).connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM notify.notification "
                                        "WHERE type IN ('LATE_RETURN', 'REMINDER', 'LATE_DIGEST')")).scalar()
    before = chased()
    run = demo(settings, tmp_path, free_port(), http=f"127.0.0.1:{free_port()}",
               STATNET_REPORTING_START="2025-06-01")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Deadline check left out: the database holds 1 org unit(s) the demo did not load (XDEMO1)" in run.stdout
    assert "Province totals, Luang Namtha (03):" in run.stdout
    assert chased() == before
