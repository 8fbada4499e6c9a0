"""Alerts across a crash: notify killed (SIGKILL) while it is delivering hundreds of e-mails
to a slow relay, then started again. Every alert arrives; one may arrive twice only if its
relay took it in the instant of the kill (at most one per sending lane), and then with the
same Message-ID, which a mail system recognises."""
from __future__ import annotations

import collections
import re
import shutil
import tempfile

import pytest
import sqlalchemy as sa

from shared import mailsink
from shared.db import engine_for
from tests.support.builders import tree
from tests.support.client import wait_until
from tests.support.processes import StatnetProcess

pytestmark = pytest.mark.e2e

UID = "AXK"
DS = f"DS{UID}"
LANES = 2  # e-mail lanes of one notify (services.notify.service): sends in flight at a kill


@pytest.fixture
def relay(settings):
    """A real SMTP server taking 40 ms over each message: deliveries take seconds, not one."""
    maildir = tempfile.mkdtemp(prefix="statnet-kill-mail-")
    proc = mailsink.start(settings.smtp_host, settings.smtp_port, maildir, delay=0.04)
    yield maildir
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(maildir, ignore_errors=True)


def email_ids(settings) -> dict[str, int]:
    with engine_for(settings.database_url).connect() as conn:
        rows = conn.execute(sa.text("SELECT id, status FROM notify.notification WHERE channel = 'email'")).all()
    return {str(i): s for i, s in rows}


def message_ids(maildir: str) -> list[str]:
    return [re.fullmatch(r"<statnet-notification-(\d+)@.*>", m["Message-ID"]).group(1)
            for m in mailsink.read(maildir)]


def test_alerts_are_all_delivered_across_a_kill_and_none_twice_but_in_flight(settings, relay):
    edge = StatnetProcess(settings, services=("gateway", "registry", "submission", "validation", "aggregation"),
                          name="edge").start()
    notify = StatnetProcess(settings, services=("notify",), name="notify").start()
    try:
        t, units = tree(UID, districts=2, villages=12, opening="2026-06-01")
        edge.api.import_metadata({
            "orgUnits": units,
            "dataElements": [{"code": f"OPD{UID}", "name": "Visits", "valueType": "INTEGER", "aggregationType": "SUM"}],
            "dataSets": [{"code": DS, "name": "Monthly", "periodType": "Monthly", "dataElements": [f"OPD{UID}"],
                          "orgUnitLevel": 4, "timelyDays": 10}],
            "focalPoints": [{"code": f"SP{UID}", "name": "ຫົວໜ້າແຂວງ", "orgUnit": t.province, "role": "supervisor",
                             "email": "province@example.la", "language": "lo"}]
                           + [{"code": f"S{d}", "name": f"Head {d}", "orgUnit": d, "role": "supervisor",
                               "email": f"{d.lower()}@example.la", "language": "en"} for d in t.districts]})
        # June to October are past their deadlines, none sent: 24 villages x 5 months, each
        # to its district's supervisor and the province's
        r = edge.api.post("/api/deadlines/check?asOf=2026-11-20")
        assert r.status_code == 200, r.text
        expected = 24 * 5 * 2
        assert len(email_ids(settings)) == expected

        wait_until(lambda: len(mailsink.read(relay)) >= expected // 4, timeout=60, interval=0.05,
                   message="a quarter of the alerts delivered")
        notify.kill()
        at_kill = len(message_ids(relay))
        assert at_kill < expected, "all delivered before the kill: the test proved nothing"

        notify.start()
        wait_until(lambda: set(email_ids(settings).values()) == {"SENT"}, timeout=120,
                   message="every alert SENT after the restart")
        wait_until(lambda: set(message_ids(relay)) == set(email_ids(settings)), timeout=10,
                   message="every alert in the mailbox")
        arrived = collections.Counter(message_ids(relay))
        twice = {i: n for i, n in arrived.items() if n > 1}
        assert len(twice) <= LANES and all(n == 2 for n in twice.values()), twice
    finally:
        notify.close()
        edge.close()
