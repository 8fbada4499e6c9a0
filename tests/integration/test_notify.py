"""Notify on the real broker, database and a real SMTP server (aiosmtpd) and webhook:
late returns, reminders and digests from one idempotent deadline check; delivery
retried while the SMTP server is down; two notify instances send nothing twice."""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from services import status
from shared import mailsink
from tests.conftest import free_port
from tests.support.builders import tree
from tests.support.client import wait_until

UID = "NTF"
DS = f"HM{UID}"


class Webhook:
    """A real HTTP endpoint that keeps what it is sent."""

    def __init__(self):
        self.received: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append(json.loads(body.decode("utf-8")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Smtp:
    """The module's SMTP server, which the tests stop and start."""

    def __init__(self, host, port):
        self.host, self.port, self.proc = host, port, None
        self.maildir = tempfile.mkdtemp(prefix="statnet-notify-mail-")

    def start(self):
        self.proc = mailsink.start(self.host, self.port, self.maildir)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def mails(self):
        return mailsink.read(self.maildir)


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def settings(settings, webhook):
    # this module's own: alerts also to a webhook, and a short first retry for the SMTP-down test
    return settings.replace(alert_webhook=webhook.url, notify_retry_seconds=1)


@pytest.fixture(scope="module")
def smtp(settings):
    server = Smtp(settings.smtp_host, settings.smtp_port)  # not started: the first test wants it down
    yield server
    server.stop()
    shutil.rmtree(server.maildir, ignore_errors=True)


@pytest.fixture(scope="module")
def world(system):
    t, units = tree(UID, opening="2026-09-01")
    d1, d2 = t.districts
    system.import_metadata({
        "orgUnits": units,
        "dataElements": [{"code": f"OPD{UID}", "name": "Outpatient visits", "valueType": "INTEGER_ZERO_OR_POSITIVE",
                          "aggregationType": "SUM"}],
        "dataSets": [{"code": DS, "name": "Monthly health return", "nameLo": "ລາຍງານສາທາລະນະສຸກປະຈຳເດືອນ",
                      "periodType": "Monthly", "dataElements": [f"OPD{UID}"], "orgUnitLevel": 4,
                      "timelyDays": 10, "expiryDays": 0}],
        "focalPoints": [
            {"code": f"SP{UID}", "name": "ຫົວໜ້າແຂວງ", "orgUnit": t.province, "role": "supervisor",
             "email": "province@example.la", "language": "lo", "digest": True},
            {"code": f"S1{UID}", "name": "ຫົວໜ້າເມືອງ 1", "orgUnit": d1, "role": "supervisor",
             "email": "d1@example.la", "language": "lo"},
            {"code": f"S2{UID}", "name": "District 2 head", "orgUnit": d2, "role": "supervisor",
             "email": "d2@example.la", "language": "en"},
            {"code": f"R11{UID}", "name": "ຜູ້ລາຍງານບ້ານ", "orgUnit": t.villages[d1][0], "role": "reporter",
             "email": "v11@example.la", "language": "lo"},
        ],
    })
    tokens = {d: system.create_user(f"rep-{d}", "reporter", d) for d in t.districts}
    # September: the first village of each district reports, the second doesn't
    for d in t.districts:
        r = system.submit({"dataSet": DS, "period": "202609", "orgUnit": t.villages[d][0],
                           "dataValues": [{"dataElement": f"OPD{UID}", "value": "120"}]}, token=tokens[d])
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    return t, tokens


def notifications(system, **params) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return [n for n in system.get(f"/api/notifications?{query}").json()["notifications"] if n["dataSet"] in (DS, "*")]


def pending_gauge(system) -> dict:
    """statnet_notifications_pending as scraped from /metrics: {(type, channel): n}."""
    out = {}
    for family in text_string_to_metric_families(system.get("/metrics").text):
        for s in family.samples:
            if s.name == "statnet_notifications_pending" and s.value:
                out[(s.labels["type"], s.labels["channel"])] = s.value
    return out


def late_gauge() -> float | None:
    return REGISTRY.get_sample_value("statnet_late_returns", {"dataset": DS})


def test_a_dry_run_says_what_the_check_would_find_and_records_nothing(system, world, smtp, webhook):
    before = late_gauge()
    for asked in ("asOf=2026-10-20&dryRun=true", "asOf=2026-10-20&dryRun=true"):  # twice: nothing held
        r = system.post(f"/api/deadlines/check?{asked}")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["dryRun"] is True and (report["late"], report["due"], report["expected"]) == (2, 0, 4)
        assert report["notifications"] == 10  # what the real check records below
    assert notifications(system) == [] and late_gauge() == before
    # a misspelt parameter or flag is refused, and nothing is checked (?asof= checked today)
    for asked, named in (("asof=2026-10-20", "'asof'"), ("asOf=2026-10-20&dryrun=true", "'dryrun'"),
                         ("asOf=2026-10-20&dryRun=perhaps", "dryRun")):
        r = system.post(f"/api/deadlines/check?{asked}")
        assert r.status_code == 400 and named in r.json()["message"], r.text
    time.sleep(1)  # (a notification recorded would be sent at once: none was)
    assert notifications(system) == [] and smtp.mails() == [] and webhook.received == []


def test_late_returns_are_found_and_delivered_once_smtp_is_back(system, world, smtp, webhook, settings):
    t, _ = world
    d1, d2 = t.districts
    r = system.post("/api/deadlines/check?asOf=2026-10-20")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["asOf"] == "2026-10-20" and report["late"] == 2 and report["due"] == 0
    # of the four villages' September returns, two came in
    assert {"dataSet": DS, "late": 2, "due": 0, "expected": 4} in report["dataSets"]
    # per unit to the districts' supervisors, one digest to the province's; each by e-mail and
    # webhook. The province's per-unit alerts are recorded too (2 x 2), carried by its digest
    assert report["notifications"] == 10
    assert late_gauge() == 2

    # the SMTP server is down: e-mails stay PENDING with their attempts counted; webhooks go out
    def retried():
        emails = [n for n in notifications(system) if n["channel"] == "email" and not carried(n)]
        return emails if len(emails) == 3 and all(n["attempts"] >= 2 and n["status"] == "PENDING"
                                                  for n in emails) else None

    def carried(n):  # a LATE_RETURN of the digest reader: goes out inside the digest
        return n["type"] == "LATE_RETURN" and n["recipient"] == f"SP{UID}"

    emails = wait_until(retried, timeout=30, message="e-mail attempts while SMTP is down")
    assert all("Error" in (n["lastError"] or "") for n in emails)
    # e-mails waiting: the districts' two alerts and the province's digest (its alerts go inside)
    assert pending_gauge(system) == {("LATE_RETURN", "email"): 2, ("LATE_DIGEST", "email"): 1}
    assert status.collect(settings)["alerts"]["waiting"] == 3
    # (by webhook, its digest is out already, and they with it; by e-mail they wait for it)
    province = notifications(system, recipient=f"SP{UID}", type="LATE_RETURN")
    assert sorted((n["orgUnit"], n["period"], n["channel"], n["status"]) for n in province) == sorted(
        (t.villages[d][1], "202609", channel, status) for d in (d1, d2)
        for channel, status in (("email", "PENDING"), ("webhook", "SENT")))
    smtp.start()
    wait_until(lambda: all(n["status"] == "SENT" for n in notifications(system)), timeout=60,
               message="every alert sent once SMTP is back")
    mails = smtp.mails()
    assert pending_gauge(system) == {}
    assert sorted(m["To"] for m in mails) == ["d1@example.la", "d2@example.la", "province@example.la"]
    by_to = {m["To"]: m for m in mails}
    # Lao subject and body, the space before ໄລຍະ intact through RFC 2047 encoding
    d1_mail = by_to["d1@example.la"]
    assert d1_mail["Subject"] == (f"[statnet] ລາຍງານຊັກຊ້າ: ລາຍງານສາທາລະນະສຸກປະຈຳເດືອນ ({DS}) ໄລຍະ 202609 "
                                  f"ຈາກ ບ້ານ 1.2 ({t.villages[d1][1]})")
    assert "2026-10-10" in d1_mail.get_content() and "ຮຽນ ຫົວໜ້າເມືອງ 1" in d1_mail.get_content()
    assert by_to["d2@example.la"]["Subject"].startswith("[statnet] Late return: Monthly health return")
    digest = by_to["province@example.la"]
    assert digest["Subject"] == f"[statnet] ລາຍງານຊັກຊ້າ 2 ສະບັບ ໃນ ແຂວງ ({t.province})"
    body = digest.get_content()
    assert t.villages[d1][1] in body and t.villages[d2][1] in body and t.villages[d1][0] not in body
    assert "ທັນເວລາຮອດວັນທີ 2026-10-10" in body  # each line's date says what it is

    assert sorted((h["type"], h["recipient"]) for h in webhook.received) == sorted(
        [("LATE_RETURN", f"S1{UID}"), ("LATE_RETURN", f"S2{UID}"), ("LATE_DIGEST", f"SP{UID}")])
    # the province's per-unit alerts went out with its digest: SENT, not sent on their own
    province = notifications(system, recipient=f"SP{UID}", type="LATE_RETURN")
    assert len(province) == 4 and all(n["status"] == "SENT" and n["attempts"] >= 1 for n in province)
    assert any(h["details"].get("names", {}).get("dataSet", {}).get("lo") == "ລາຍງານສາທາລະນະສຸກປະຈຳເດືອນ"
               for h in webhook.received)


def test_the_check_is_idempotent_and_the_digest_is_daily(system, world, smtp):
    before = len(smtp.mails())
    again = system.post("/api/deadlines/check?asOf=2026-10-20").json()
    assert (again["late"], again["notifications"]) == (2, 0)
    next_day = system.post("/api/deadlines/check?asOf=2026-10-21").json()
    assert next_day["notifications"] == 2  # the province's digest of the new day, by e-mail and webhook
    wait_until(lambda: len(smtp.mails()) == before + 1, message="the next day's digest")
    assert len(notifications(system, type="LATE_RETURN")) == 8  # S1, S2 and the province's, 2 channels


def test_a_late_return_arriving_lowers_the_count(system, world):
    t, tokens = world
    d1 = t.districts[0]
    r = system.submit({"dataSet": DS, "period": "202609", "orgUnit": t.villages[d1][1],
                       "dataValues": [{"dataElement": f"OPD{UID}", "value": "80"}]}, token=tokens[d1])
    sub = system.wait_status(r.json()["id"])
    assert sub["status"] == "AGGREGATED" and sub["onTime"] is False
    wait_until(lambda: system.post("/api/deadlines/check?asOf=2026-10-22").json()["late"] == 1,
               message="the late return counted")
    assert late_gauge() == 1


def test_reporters_are_reminded_before_the_due_date(system, world, smtp):
    t, _ = world
    before = len(smtp.mails())
    report = system.post("/api/deadlines/check?asOf=2026-10-29").json()
    assert report["due"] == 4  # October: nobody has reported, the month ends in two days
    reminders = wait_until(lambda: [n for n in notifications(system, type="REMINDER") if n["status"] == "SENT"],
                           message="reminder sent")
    assert {(n["recipient"], n["orgUnit"], n["period"]) for n in reminders} == {
        (f"R11{UID}", t.villages[t.districts[0]][0], "202610")}
    [mail] = wait_until(lambda: [m for m in smtp.mails()[before:] if m["X-Statnet-Type"] == "REMINDER"],
                        message="reminder e-mail")
    assert mail["To"] == "v11@example.la" and "2026-10-31" in mail["Subject"]
    assert "2026-11-10" in mail.get_content()  # on time until end + timelyDays


def test_notifications_are_listed_by_known_type_only(system, world):
    r = system.get("/api/notifications?type=BOGUS")
    assert r.status_code == 400 and "BOGUS" in r.json()["message"] and "LATE_RETURN" in r.json()["message"]
    assert system.get("/api/notifications?type=REMINDER").status_code == 200


def test_notifications_are_listed_by_status_and_channel(system, world):
    whole = system.get("/api/notifications").json()["notifications"]
    for state, channel in (("SENT", "email"), ("SENT", "webhook"), ("FAILED", "email"), ("PENDING", "webhook")):
        got = system.get(f"/api/notifications?status={state}&channel={channel}").json()["notifications"]
        assert got == [n for n in whole if (n["status"], n["channel"]) == (state, channel)]
    assert any(n["status"] == "SENT" for n in whole)
    for name, value in (("status", "sent"), ("channel", "sms")):
        r = system.get(f"/api/notifications?{name}={value}")
        assert r.status_code == 400 and r.json()["message"].startswith(f"{name}: unknown {name} {value!r}"), r.text


def test_notifications_are_listed_by_data_set_and_period_and_a_misspelt_filter_is_refused(system, world):
    """?dataSet= and ?period= choose, as the other fields do; a parameter the list does not
    know (?typ=, ?dataset=) is a 400 naming it, where it listed every alert as if matched."""
    whole = system.get("/api/notifications").json()["notifications"]
    some = next(n for n in whole if n["dataSet"] == DS)
    got = system.get(f"/api/notifications?dataSet={DS}&period={some['period']}").json()["notifications"]
    assert got and got == [n for n in whole if (n["dataSet"], n["period"]) == (DS, some["period"])]
    assert system.get(f"/api/notifications?dataSet={DS}X").json()["notifications"] == []
    # DHIS2 clients' habit: paging=false is taken (a page of at most 10,000 all the same)
    assert system.get("/api/notifications?paging=false").json()["notifications"] == whole
    assert system.get("/api/notifications?paging=maybe").status_code == 400
    for misspelt in ("typ=LATE_RETURN", "dataset=" + DS, "recipient=S1" + UID + "&pe=202609"):
        r = system.get(f"/api/notifications?{misspelt}")
        name = misspelt.split("&")[-1].split("=")[0]
        assert r.status_code == 400 and f"unknown parameter {name!r}" in r.json()["message"], r.text
        assert "dataSet" in r.json()["message"]  # and says what it knows


def test_notifications_come_a_page_at_a_time_with_a_pager(system, world):
    """A province's list passes any one answer's size: it is cut into pages that say how
    many there are (cut at 10,000 without a word, the newest alerts were out of sight)."""
    t, _ = world
    whole = system.get("/api/notifications").json()
    assert whole["pager"] == {"page": 1, "pageSize": 10_000, "total": len(whole["notifications"]), "pageCount": 1}
    pages = [system.get(f"/api/notifications?pageSize=3&page={p}").json() for p in (1, 2)]
    assert [n["id"] for page in pages for n in page["notifications"]] == [n["id"] for n in whole["notifications"][:6]]
    assert pages[1]["pager"] == {"page": 2, "pageSize": 3, "total": len(whole["notifications"]),
                                 "pageCount": -(-len(whole["notifications"]) // 3)}
    # a supervisor's list is judged by its scope before it is cut into pages
    sup1 = system.create_user(f"S1{UID}", "supervisor", t.districts[0])
    own = system.get("/api/notifications", token=sup1).json()
    assert own["pager"]["total"] == len(own["notifications"]) > 1
    second = system.get("/api/notifications?pageSize=1&page=2", token=sup1).json()
    assert second["notifications"] == own["notifications"][1:2] and second["pager"]["total"] == own["pager"]["total"]
    assert system.get("/api/notifications?page=999&pageSize=10").json()["notifications"] == []
    for bad in ("pageSize=0", "pageSize=10001", "page=-1", "page=x", "pageSize=1.5"):
        r = system.get(f"/api/notifications?{bad}")
        assert r.status_code == 400 and bad.split("=")[0] in r.json()["message"], (bad, r.text)


def test_a_recipient_outside_the_callers_scope_is_403_and_unknown_is_404(system, world):
    t, tokens = world
    d1, d2 = t.districts
    sup1 = system.create_user(f"S1{UID}", "supervisor", d1)  # acts for its own focal point
    assert system.get(f"/api/notifications?recipient=S1{UID}", token=sup1).status_code == 200
    for other in (f"S2{UID}", f"SP{UID}"):  # a neighbour's, and the province's above it
        r = system.get(f"/api/notifications?recipient={other}", token=sup1)
        assert r.status_code == 403 and "outside the scope" in r.json()["message"], r.text
    r = system.get(f"/api/notifications?recipient=NOBODY{UID}")
    assert r.status_code == 404 and f"NOBODY{UID}" in r.json()["message"]
    # so is a unit outside it: its alerts are not "none" (an empty 200 said they were)
    for other in (d2, t.province):
        r = system.get(f"/api/notifications?orgUnit={other}", token=sup1)
        assert r.status_code == 403 and other in r.json()["message"], r.text
    assert system.get(f"/api/notifications?orgUnit={d1}", token=sup1).status_code == 200
    # unfiltered, the same rule: alerts about its subtree, to focal points in it
    listed = system.get("/api/notifications", token=sup1).json()["notifications"]
    assert listed and {n["recipient"] for n in listed} <= {f"S1{UID}", f"R11{UID}"}


def test_only_admins_and_operators_check_and_as_of_must_be_a_date(system, world):
    t, tokens = world
    assert system.post("/api/deadlines/check?asOf=2026-10-20", token=tokens[t.districts[0]]).status_code == 403
    for bad in ("20-10-2026", "20261020", "9999-12-31", "0001-01-01", "", " "):
        r = system.post(f"/api/deadlines/check?asOf={bad}")
        assert r.status_code == 400 and "asOf" in r.json()["message"], r.text
    operator = system.create_user(f"op-{UID}", "operator", None)
    assert system.post("/api/deadlines/check?asOf=2026-10-20", token=operator).status_code == 200


def test_two_notify_instances_send_nothing_twice(system, world, smtp, settings):
    from services.runner import build

    second = build(settings, ["notify"])
    second.start()
    try:
        before = smtp.mails()
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            system.post("/api/deadlines/check?asOf=2026-11-20").json())) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        # November 20: October is late at every village (and September still at one); the four
        # checks together record the new alerts once
        assert [r["late"] for r in results] == [5] * 4
        created = sum(r["notifications"] for r in results)
        # V1x to S1, V2x to S2, October's four to the province (in its digest), the digest;
        # e-mail and webhook each
        assert created == 2 * (2 + 2 + 4 + 1)
        wait_until(lambda: all(n["status"] == "SENT" for n in notifications(system)), timeout=60,
                   message="all sent")
        new = smtp.mails()[len(before):]
        ids = [m["X-Statnet-Notification"] for m in new]
        assert len(ids) == len(set(ids)) == 2 + 2 + 1
    finally:
        second.stop()


def test_a_supervisor_without_an_address_has_failed_e_mails_not_none(system, world):
    t, _ = world
    d2 = t.districts[1]
    r = system.request("PUT", f"/api/focalPoints/SX{UID}",
                       json={"name": "No address", "orgUnit": d2, "role": "supervisor", "language": "en"})
    assert r.status_code == 201, r.text
    failed_before = REGISTRY.get_sample_value(
        "statnet_notifications_total", {"type": "LATE_RETURN", "channel": "email", "status": "FAILED"}) or 0
    system.post("/api/deadlines/check?asOf=2026-12-20")
    # September's one late village of the district, October's and November's two: each alert
    # exists by e-mail too, FAILED at the first attempt with the reason, as the webhook's go out
    listed = wait_until(lambda: (lambda ns: ns if len(ns) == 10 and all(n["status"] != "PENDING" for n in ns)
                                 else None)(notifications(system, recipient=f"SX{UID}")),
                        timeout=30, message="the new supervisor's alerts settled")
    emails = [n for n in listed if n["channel"] == "email"]
    assert len(emails) == 5 and all(n["status"] == "FAILED" and n["attempts"] == 1
                                    and "no e-mail address" in n["lastError"] for n in emails)
    assert all(n["status"] == "SENT" for n in listed if n["channel"] == "webhook")
    assert REGISTRY.get_sample_value("statnet_notifications_total", {
        "type": "LATE_RETURN", "channel": "email", "status": "FAILED"}) == failed_before + 5


def test_an_address_given_or_corrected_later_is_the_one_alerts_go_to(system, world, smtp):
    """The supervisor of the test above is given an address: the alerts that failed for want
    of one go out (nothing is dropped), and an address corrected while they wait for a
    relay that is down is the one they reach (an alert kept the address it was recorded with)."""
    t, _ = world
    fp = {"name": "No address", "orgUnit": t.districts[1], "role": "supervisor", "language": "en"}

    def emails():
        return [n for n in notifications(system, recipient=f"SX{UID}") if n["channel"] == "email"]

    assert len(emails()) == 5 and all(n["status"] == "FAILED" for n in emails())
    smtp.stop()
    try:
        before = len(smtp.mails())
        r = system.request("PUT", f"/api/focalPoints/SX{UID}", json={**fp, "email": "typo@example.la"})
        assert r.status_code == 200, r.text
        # queued again, and tried against the relay that is down
        wait_until(lambda: all(n["status"] == "PENDING" and n["attempts"] >= 2 for n in emails()), timeout=30,
                   message="queued again and tried")
        r = system.request("PUT", f"/api/focalPoints/SX{UID}", json={**fp, "email": "district2@example.la"})
        assert r.status_code == 200, r.text
    finally:
        smtp.start()
    sent = wait_until(lambda: (lambda ns: ns if all(n["status"] == "SENT" for n in ns) else None)(emails()),
                      timeout=60, message="sent once the relay is back")
    mails = [m for m in smtp.mails()[before:] if m["X-Statnet-Notification"] in {str(n["id"]) for n in sent}]
    assert len(mails) == 5 and {m["To"] for m in mails} == {"district2@example.la"}


def test_a_digest_readers_alert_recorded_after_the_days_digest_goes_in_the_next_one(system, world, smtp):
    """A unit found late by a second check on a day whose digest is out: the reader's alerts
    about it wait for the next digest (that digest, made of what was late at its own check,
    left them out and still marked them SENT: the province head never heard of it). If the
    unit reports before then, they are withdrawn: the next digest listed it as late all the
    same, its count above the check's own."""
    t, _ = world
    d1 = t.districts[0]
    joiner = f"V9{UID}"
    system.import_metadata({"orgUnits": [{"code": joiner, "name": "Late joiner", "nameLo": "ບ້ານໃໝ່",
                                          "parent": d1, "openingDate": "2026-09-01"}]})
    assert system.post("/api/deadlines/check?asOf=2026-12-20").json()["notifications"] > 0

    def province_about_joiner():
        return [n for n in notifications(system, recipient=f"SP{UID}", type="LATE_RETURN")
                if n["orgUnit"] == joiner]

    waiting = province_about_joiner()
    assert sorted((n["period"], n["channel"]) for n in waiting) == sorted(
        (p, c) for p in ("202609", "202610", "202611") for c in ("email", "webhook"))
    assert all(n["status"] == "PENDING" and n["attempts"] == 0 for n in waiting)  # the 20th's digest is out
    for period in ("202609", "202610"):  # the joiner catches up, all but November
        r = system.submit({"dataSet": DS, "period": period, "orgUnit": joiner,
                           "dataValues": [{"dataElement": f"OPD{UID}", "value": "7"}]})
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    before = len(smtp.mails())
    system.post("/api/deadlines/check?asOf=2026-12-21")
    [digest] = wait_until(lambda: [m for m in smtp.mails()[before:] if m["X-Statnet-Type"] == "LATE_DIGEST"],
                          timeout=30, message="the next day's digest")
    body = digest.get_content()
    assert f"202611: ບ້ານໃໝ່ ({joiner})" in body, body
    assert "202609: ບ້ານໃໝ່" not in body and "202610: ບ້ານໃໝ່" not in body, body
    wait_until(lambda: sorted((n["period"], n["status"]) for n in province_about_joiner()) ==
               [("202611", "SENT"), ("202611", "SENT")], timeout=30,
               message="the November alerts sent with the digest that lists them, the others withdrawn")


def test_the_timer_runs_the_check_on_its_own(world, settings, caplog):
    import logging

    from services.runner import build
    from shared.periods import today

    caplog.set_level(logging.INFO, logger="services.notify.service")
    timed = build(settings.replace(deadline_check_seconds=1), ["notify"])
    timed.start()
    try:
        wait_until(lambda: any(r.getMessage().startswith(f"deadline check as of {today().isoformat()}")
                               for r in caplog.records), timeout=15, message="a timer-driven check")
    finally:
        timed.stop()


def test_the_timer_checks_at_start_when_the_last_check_is_an_interval_old(world, settings, caplog):
    """The first tick is due an interval after the last check recorded, not after each start:
    a notify restarted more often than the interval never ran the check."""
    import logging
    import time

    import sqlalchemy as sa

    from services.runner import build
    from shared.db import engine_for
    from shared.periods import today

    def timed_check_within(seconds: float) -> bool:
        caplog.clear()
        timed = build(settings.replace(deadline_check_seconds=3600), ["notify"])
        timed.start()
        try:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                if any(r.getMessage().startswith(f"deadline check as of {today()}") for r in caplog.records):
                    return True
                time.sleep(0.1)
            return False
        finally:
            timed.stop()

    caplog.set_level(logging.INFO, logger="services.notify.service")
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(sa.text("UPDATE notify.late_count SET checked_at = now() - interval '10 minutes'"))
    assert not timed_check_within(4)  # checked ten minutes ago: due in fifty
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(sa.text("UPDATE notify.late_count SET checked_at = now() - interval '2 hours'"))
    assert timed_check_within(15)  # overdue: at once


def test_pending_alerts_are_a_zero_series_of_every_type_and_channel_in_use(system, world):
    """An empty queue is said as 0, not by the series being absent (which is also how a notify
    that is down looks): a rule on it can tell the two apart."""
    from services.notify.templates import SUBJECTS

    zeros = set()
    for family in text_string_to_metric_families(system.get("/metrics").text):
        for s in family.samples:
            if s.name == "statnet_notifications_pending":
                zeros.add((s.labels["type"], s.labels["channel"]))
    assert {(kind, "email") for kind in SUBJECTS} <= zeros


def test_an_alert_whose_return_came_while_it_waited_goes_saying_so(system, world, smtp, settings):
    """The relay down, a late alert, a reminder and the province's digest wait; the returns
    they are about are accepted meanwhile. The alert and the reminder go all the same, once,
    saying the return has come since (an acceptance probe: they were deleted, gone from the
    recipient's list, while the webhook had delivered them: "nothing is dropped"); the
    digest, the reader's summary of the day, no longer lists the unit."""
    import sqlalchemy as sa

    from shared.db import engine_for

    t, tokens = world
    d1 = t.districts[0]
    village, other = t.villages[d1]  # R11's village: reminded of November, late with October
    stock = f"ST{UID}"
    system.import_metadata({"dataSets": [{"code": stock, "name": "Monthly stock return", "nameLo": "ລາຍງານສາງ",
                                          "periodType": "Monthly", "dataElements": [f"OPD{UID}"],
                                          "orgUnitLevel": 4, "timelyDays": 10, "expiryDays": 0}]})
    smtp.stop()
    before = len(smtp.mails())
    assert system.post("/api/deadlines/check?asOf=2026-11-28").json()["notifications"] > 0

    def by_email(recipient):
        return {(n["type"], n["orgUnit"], n["period"]): n for n in system.get(
            f"/api/notifications?recipient={recipient}&dataSet={stock}").json()["notifications"]
            if n["channel"] == "email"}

    answered, unanswered = ("LATE_RETURN", village, "202610"), ("LATE_RETURN", other, "202610")
    assert {answered, unanswered} <= set(by_email(f"S1{UID}"))
    assert set(by_email(f"R11{UID}")) == {("REMINDER", village, "202611")}
    for period in ("202610", "202611"):
        r = system.submit({"dataSet": stock, "period": period, "orgUnit": village,
                           "dataValues": [{"dataElement": f"OPD{UID}", "value": "3"}]}, token=tokens[d1])
        assert system.wait_status(r.json()["id"])["status"] == "AGGREGATED"
    with engine_for(settings.database_url).connect() as conn:
        wait_until(lambda: conn.execute(sa.text("SELECT count(*) FROM notify.received WHERE data_set = :ds"),
                                        {"ds": stock}).scalar() == 2, message="notify told of both returns")
    def withdrawn(kind):
        return REGISTRY.get_sample_value("statnet_notifications_total",
                                         {"type": kind, "channel": "email", "status": "WITHDRAWN"}) or 0

    before_withdrawn = {kind: withdrawn(kind) for kind in ("LATE_RETURN", "REMINDER")}
    smtp.start()
    wait_until(lambda: all(n["status"] == "SENT" for n in by_email(f"S1{UID}").values()), timeout=60,
               message="the still-late villages' alerts sent")
    assert {answered, unanswered} <= set(by_email(f"S1{UID}"))
    wait_until(lambda: [n["status"] for n in by_email(f"R11{UID}").values()] == ["SENT"], timeout=60,
               message="the reminder sent")
    [digest] = wait_until(lambda: [m for m in smtp.mails()[before:] if m["X-Statnet-Type"] == "LATE_DIGEST"
                                   and f"({stock})" in m.get_content()], timeout=60, message="the day's digest")
    lines = [line for line in digest.get_content().splitlines() if f"({stock}) 202610" in line]
    assert any(f"({other})" in line for line in lines) and not any(f"({village})" in line for line in lines), lines
    # withdrawn: only the province's alert its digest carried, the digest dropping the line
    assert withdrawn("LATE_RETURN") - before_withdrawn["LATE_RETURN"] == 1
    assert withdrawn("REMINDER") - before_withdrawn["REMINDER"] == 0
    time.sleep(1)
    # (a reminder's subject names no unit: its body does)
    about_village = [m for m in smtp.mails()[before:] if m["X-Statnet-Type"] in ("LATE_RETURN", "REMINDER")
                     and f"({village})" in m.get_content() and f"({stock})" in m["Subject"]
                     and ("202610" in m["Subject"] or "202611" in m["Subject"])]
    assert sorted(m["X-Statnet-Type"] for m in about_village) == ["LATE_RETURN", "REMINDER"], about_village
    # (both readers' language is Lao)
    late, reminder = sorted(about_village, key=lambda m: m["X-Statnet-Type"])
    assert "ໄດ້ຮັບຂໍ້ມູນຂອງໄລຍະນີ້ແລ້ວ ຫຼັງຈາກບັນທຶກແຈ້ງເຕືອນນີ້" in late.get_content()
    assert "ໄດ້ຮັບລາຍງານນີ້ແລ້ວ: ບໍ່ຕ້ອງເຮັດຫຍັງຕື່ມອີກ" in reminder.get_content()
    assert "ຫຼັງຈາກບັນທຶກແຈ້ງເຕືອນນີ້" not in [m for m in smtp.mails()[before:] if m["X-Statnet-Type"] == "LATE_RETURN"
                           and f"({other})" in m["Subject"] and f"({stock})" in m["Subject"]][0].get_content()
