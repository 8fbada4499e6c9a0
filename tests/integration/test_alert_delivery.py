"""Alert delivery against endpoints having a bad day (CONTRACT 7: "Delivery failures
are retried; nothing is dropped"): a relay that greylists, an address in Lao script,
a webhook that hangs, answers a broken status line, then 404. Each failure is that one
notification's, retried; none holds up another, and a hanging webhook never holds up
e-mail."""
from __future__ import annotations

import time

import pytest

from tests.support.builders import tree, village_data_set, village_return
from tests.support.client import wait_until
from tests.support.relay import GreylistingRelay, ScriptedWebhook

UID = "DLV"
LAO_ADDRESS = "ສົມໃຈ@ຕົວຢ່າງ.la"  # vowel and tone marks in the local part


@pytest.fixture(scope="module")
def relay():
    # and it answers QUIT with 421 after taking a message: the message is delivered all the same
    server = GreylistingRelay(greylist={"b@example.la"}, refuse_data={"d@example.la"},
                              deny_relay={"f@example.la"}, unknown={"g@example.la"},
                              quit_reply="421 4.3.2 Service shutting down")
    yield server
    server.close()


@pytest.fixture(scope="module")
def hook():
    server = ScriptedWebhook(["hang", "garbage", "garbage", 404], hang_seconds=20)
    yield server
    server.close()


@pytest.fixture(scope="module")
def settings(settings, relay, hook):
    return settings.replace(smtp_port=relay.port, alert_webhook=hook.url, notify_retry_seconds=1)


def test_each_failure_is_its_own_and_retried_until_delivered(system, relay, hook, settings):
    t, units = tree(UID)
    codes, doc = village_data_set(UID)
    doc["orgUnits"] = units
    doc["focalPoints"] = [
        {"code": f"A{UID}", "name": "ນາງ ກ", "orgUnit": t.province, "role": "supervisor", "email": LAO_ADDRESS,
         "language": "lo"},
        {"code": f"B{UID}", "name": "B", "orgUnit": t.province, "role": "supervisor", "email": "b@example.la",
         "language": "en"},
        {"code": f"C{UID}", "name": "C", "orgUnit": t.province, "role": "supervisor", "email": "c@example.la",
         "language": "en"},
        {"code": f"D{UID}", "name": "D", "orgUnit": t.province, "role": "supervisor", "email": "d@example.la",
         "language": "en"}]
    # one the relay first refuses to relay for (misconfigured, then mended: retried), one
    # whose mailbox does not exist (refused for good)
    doc["focalPoints"] += [
        {"code": f"F{UID}", "name": "F", "orgUnit": t.province, "role": "supervisor", "email": "f@example.la",
         "language": "en"},
        {"code": f"G{UID}", "name": "G", "orgUnit": t.province, "role": "supervisor", "email": "g@example.la",
         "language": "en"}]
    # and a supervisor with no address on record: its alert by e-mail exists, and FAILED says why
    doc["focalPoints"].append({"code": f"E{UID}", "name": "E", "orgUnit": t.province, "role": "supervisor",
                               "language": "en"})
    system.import_metadata(doc)
    started = time.monotonic()
    sent = system.submit(village_return(codes, t.villages[t.districts[0]][0], "2025", 0, 0))
    assert system.wait_status(sent.json()["id"])["status"] == "REJECTED"

    def listed(channel):
        out = {}
        for code in (f"A{UID}", f"B{UID}", f"C{UID}", f"D{UID}", f"E{UID}", f"F{UID}", f"G{UID}"):
            for n in system.get(f"/api/notifications?recipient={code}&type=INVALID_RETURN").json()["notifications"]:
                if n["channel"] == channel:
                    out[code] = n
        return out

    # e-mail goes out while the webhook's first request hangs (its timeout is 15 s)
    def settled(n):
        return n["status"] == ("FAILED" if n["recipient"] in (f"E{UID}", f"G{UID}") else "SENT")

    wait_until(lambda: len(listed("email")) == 7 and all(settled(n) for n in listed("email").values()),
               timeout=12, message="every e-mail sent (or refused for good) while the webhook hangs")
    assert time.monotonic() - started < 14
    # greylisted once, then taken (a 4xx is temporary); relaying denied once, then taken (the
    # relay's configuration, not the address); an unknown mailbox refused once, for good
    assert sorted(relay.refused) == ["b@example.la", "f@example.la", "g@example.la"]
    assert listed("email")[f"B{UID}"]["attempts"] == 2
    assert listed("email")[f"F{UID}"]["attempts"] == 2
    unknown = listed("email")[f"G{UID}"]
    assert unknown["attempts"] == 1 and unknown["lastError"] == (
        "recipient refused: g@example.la: 550 5.1.1 <g@example.la>: Recipient address rejected: User unknown")
    # taken once each though every QUIT was answered 421: none sent again
    assert listed("email")[f"C{UID}"]["attempts"] == 1
    # a 500 after DATA (the relay failed to store it) was FAILED at once: retried, and taken
    refused = listed("email")[f"D{UID}"]
    assert refused["attempts"] == 2 and refused["status"] == "SENT"
    unreachable = listed("email")[f"E{UID}"]  # nothing to retry: no address
    assert unreachable["attempts"] == 1 and "no e-mail address" in unreachable["lastError"]
    by_recipient = {tuple(rcpts): (options, data) for rcpts, options, data in relay.accepted}
    assert sorted(by_recipient) == sorted([(LAO_ADDRESS,), ("b@example.la",), ("c@example.la",), ("d@example.la",),
                                           ("f@example.la",)])
    assert len(relay.accepted) == len(by_recipient)
    options, data = by_recipient[(LAO_ADDRESS,)]
    assert "SMTPUTF8" in options  # the Lao address travels as itself, through a relay that says it can
    # and its To header is the address itself in UTF-8 (RFC 6532), which a reader parses back
    # (an encoded word there read as a local part with no domain)
    import email
    import email.policy
    header = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)["To"]
    assert [a.addr_spec for a in header.addresses] == [LAO_ADDRESS]
    # (Python flags any non-ASCII local part; nothing else is wrong with it)
    assert {type(d).__name__ for d in header.defects} <= {"NonASCIILocalPartDefect"}, header.defects
    assert f"To: {LAO_ADDRESS}\r\n".encode() in data
    assert b"+0700" in data.split(b"\r\n\r\n", 1)[0]  # the Date header in Asia/Vientiane
    assert b"\n" not in data.replace(b"\r\n", b"")  # SMTP's line ends, every one
    # an operator sends the failed ones again (FAILED is final for the dispatcher only): the
    # mailbox still unknown, it is tried once more and FAILED again
    r = system.post(f"/api/notifications/retry?recipient=G{UID}&channel=email")
    assert r.status_code == 200 and r.json() == {"retried": 1}, r.text
    wait_until(lambda: listed("email")[f"G{UID}"]["attempts"] == 2, timeout=15, message="tried again")
    wait_until(lambda: listed("email")[f"G{UID}"]["status"] == "FAILED", timeout=5, message="refused again")
    # sent again, it waits from then: statnet status called it hours late at once
    import sqlalchemy as sa

    from shared.db import engine_for
    with engine_for(settings.database_url).connect() as conn:
        since = conn.execute(sa.text("SELECT now() - CAST(details->>'requeued_at' AS timestamptz) "
                                     "FROM notify.notification WHERE recipient = :r AND channel = 'email'"),
                             {"r": f"G{UID}"}).scalar()
    assert since is not None and since.total_seconds() < 60
    assert system.post("/api/notifications/retry?channel=fax").status_code == 400
    # a filter misspelt retries nothing (it retried every failed alert of every kind)
    r = system.post("/api/notifications/retry?typ=LATE_RETURN")
    assert r.status_code == 400 and "unknown parameter 'typ'" in r.json()["message"], r.text
    # the unknown mailbox's address corrected: the alert refused for good goes again, to the
    # new address (it stayed FAILED: only an address added where there was none was retried)
    r = system.put(f"/api/focalPoints/G{UID}", json={"email": "g.fixed@example.la"})
    assert r.status_code == 200, r.text
    wait_until(lambda: listed("email")[f"G{UID}"]["status"] == "SENT", timeout=15,
               message="the refused alert sent to the corrected address")
    assert listed("email")[f"G{UID}"]["attempts"] == 3
    assert [rcpts for rcpts, _, _ in relay.accepted].count(["g.fixed@example.la"]) == 1
    # a later change of name sends nothing again
    assert system.put(f"/api/focalPoints/G{UID}", json={"name": "G again"}).status_code == 200
    time.sleep(1)
    assert len(relay.accepted) == len(by_recipient) + 1

    # the webhook: hung, two broken status lines and a 404, each one notification's failure
    wait_until(lambda: len(listed("webhook")) == 7 and all(n["status"] == "SENT" for n in listed("webhook").values()),
               timeout=90, message="every webhook alert delivered in the end")
    assert hook.answers[:4] == ["hang", "garbage", "garbage", 404]
    assert sorted(r["recipient"] for r in hook.received) == sorted(f"{x}{UID}" for x in "ABCDEFG")  # once each
    assert hook.keys == [f"statnet-notification-{r['id']}" for r in hook.received]
    attempts = sorted(n["attempts"] for n in listed("webhook").values())
    assert sum(attempts) == len(hook.answers) == 7 + 4  # every try counted against its own notification


def test_an_alert_delivered_whose_record_failed_is_recorded_not_sent_again(system, relay, settings):
    """The relay took the e-mail, then recording it failed (the database connection cut between
    the 250 and the commit, as a probe caused): the row stayed PENDING and the e-mail went
    out a second time. It is recorded on a new connection now. The failure is injected by a
    trigger that refuses the first SENT of this test's alerts."""
    import sqlalchemy as sa

    from shared.db import engine_for

    uid = "DLR"
    t, units = tree(uid)
    codes, doc = village_data_set(uid)
    doc["orgUnits"] = units
    doc["focalPoints"] = [{"code": f"S{uid}", "name": "S", "orgUnit": t.province, "role": "supervisor",
                           "email": "once@example.la", "language": "en"}]
    system.import_metadata(doc)
    engine = engine_for(settings.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"""
            CREATE SEQUENCE notify.inject_{uid};
            CREATE FUNCTION notify.inject_{uid}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.recipient = 'S{uid}' AND NEW.status = 'SENT' AND nextval('notify.inject_{uid}') = 1 THEN
                    RAISE EXCEPTION 'injected: the record of a delivery fails once';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER inject_{uid} BEFORE UPDATE ON notify.notification
                FOR EACH ROW EXECUTE FUNCTION notify.inject_{uid}();"""))
    try:
        before = len([m for m in relay.accepted if m[0] == ["once@example.la"]])
        sent = system.submit(village_return(codes, t.villages[t.districts[0]][0], "2025", 0, 0))
        assert system.wait_status(sent.json()["id"])["status"] == "REJECTED"

        def alert():
            found = system.get(f"/api/notifications?recipient=S{uid}&type=INVALID_RETURN").json()["notifications"]
            return next((n for n in found if n["channel"] == "email"), None)

        wait_until(lambda: (alert() or {}).get("status") == "SENT", timeout=30, message="the alert recorded SENT")
        time.sleep(3)  # a dispatcher round or two: nothing is sent again
        assert len([m for m in relay.accepted if m[0] == ["once@example.la"]]) == before + 1
        assert alert()["attempts"] == 1
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TRIGGER inject_{uid} ON notify.notification; "
                                 f"DROP FUNCTION notify.inject_{uid}(); DROP SEQUENCE notify.inject_{uid}"))
