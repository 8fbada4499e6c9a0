"""Delivering alerts: SMTP and webhook, retried with backoff, never twice at once.

Each pending notification is sent inside its own transaction that holds the
row lock (``FOR UPDATE SKIP LOCKED``), so two notify instances never send the
same one, and it is marked SENT in that same transaction. A crash between
the SMTP server accepting the message and the commit sends it again on
restart (at-least-once); the ``Message-ID`` is fixed per notification so a
mail system can recognise the repeat. A webhook is the same: an endpoint that
answers after ``SEND_TIMEOUT``, or just before a crash, gets the alert again,
with the same ``id`` and ``Idempotency-Key`` header.
"""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import logging
import re
import smtplib
import ssl
import time
import types
import urllib.error
import urllib.request
from email.mime.text import MIMEText
from email.utils import format_datetime, parsedate_to_datetime

import sqlalchemy as sa

from services.notify import tables as t
from services.notify.templates import ANSWERED_SINCE, OUTCOMES, render
from shared.expressions import SYMBOLS
from shared import metrics
from shared.background import Pump
from shared.config import Settings
from shared.db import engine_for
from shared.periods import LOCAL_TZ, show
from shared.schemas.api import violation_out

log = logging.getLogger(__name__)

# Retried for three days (a relay down over a long weekend), then FAILED: visible in
# GET /api/notifications and statnet_notifications_total, not silently dropped
GIVE_UP_AFTER = dt.timedelta(days=3)
MAX_BACKOFF_SECONDS = 600
SEND_TIMEOUT = 15


class PermanentFailure(Exception):
    """Retrying cannot help (no address, the server refuses the recipient for good)."""


# why an e-mail alert to a focal point with no address failed (``requeue_for_new_addresses``
# finds it by this text; PostgreSQL's format() reads the same %s)
NO_ADDRESS = "focal point %s has no e-mail address"


# when a notification sent again is tried: a digest reader's alert goes again inside the
# digest queued with it, not on its own
_AGAIN_AT = "CASE WHEN n.details ? 'delivered_by' THEN timestamptz 'infinity' ELSE now() END"

# A focal point given an address, or a new one: its e-mail alerts that failed (for want of
# an address; an unknown mailbox, refused for good; a relay down past the last retry) go
# out now, to that address (nothing is dropped). The address an alert was last sent to is
# kept in its details, so that a later change of name or language sends nothing again. Run
# where the replica takes the change, in its transaction.
_REQUEUE = sa.text(f"""
UPDATE {t.notification.fullname} n
SET status = 'PENDING', last_error = NULL,
    details = n.details || jsonb_build_object('email', f.email, 'requeued_at', now()),
    next_attempt_at = {_AGAIN_AT}
FROM {t.replica.focal_point.fullname} f
WHERE n.channel = 'email' AND n.status = 'FAILED' AND n.recipient = ANY(CAST(:codes AS text[]))
  AND f.code = n.recipient AND coalesce(f.email, '') <> ''
  AND (n.last_error = format(:no_address, n.recipient) OR n.details->>'email' IS DISTINCT FROM f.email)
""")


# An operator's "send them again" (POST /api/notifications/retry) after what FAILED cured:
# a relay or endpoint down past the last retry, a mailbox refused and since created.
_RETRY = sa.text(f"""
UPDATE {t.notification.fullname} n
SET status = 'PENDING', next_attempt_at = {_AGAIN_AT},
    details = n.details || jsonb_build_object('requeued_at', now())  -- waiting again from now (statnet status)
WHERE n.status = 'FAILED'
  -- (never to one who left: their alerts were given up for it)
  AND NOT EXISTS (SELECT 1 FROM {t.replica.focal_point.fullname} f
                  WHERE f.code = n.recipient AND f.retired_on IS NOT NULL)
  AND (CAST(:recipient AS text) IS NULL OR n.recipient = :recipient)
  AND (CAST(:type AS text) IS NULL OR n.type = :type)
  AND (CAST(:channel AS text) IS NULL OR n.channel = :channel)
""")


def retry_failed(conn: sa.Connection, recipient: str | None, type_: str | None, channel: str | None) -> int:
    """FAILED notifications (of a recipient, type, channel) PENDING again, each given one more
    attempt at least (past ``GIVE_UP_AFTER`` since it was recorded, a new failure is final
    again at once); how many. A digest's alerts go again inside it, as always."""
    return conn.execute(_RETRY, {"recipient": recipient, "type": type_, "channel": channel}).rowcount


# A focal point retired (the person left): what still waits for them is given up, FAILED
# with the reason (visible; an operator's retry resends it once they are active again), never
# sent to a mailbox nobody reads; a digest reader's alerts that wait for a digest with them.
# One the dispatcher holds (sending it, or a digest carrying it) is skipped: waiting on it
# while holding others it will mark deadlocked; the dispatcher gives it up as it sends
# (``_deliver_or_withdraw``), as it does one recorded by a check that read the focal point
# before it retired.
_RETIRED = sa.text(f"""
UPDATE {t.notification.fullname} n
SET status = 'FAILED', last_error = format('focal point %s retired on %s', n.recipient, f.retired_on)
FROM {t.replica.focal_point.fullname} f
WHERE n.id IN (SELECT a.id FROM {t.notification.fullname} a
               WHERE a.status = 'PENDING' AND a.recipient = ANY(CAST(:codes AS text[]))
               FOR UPDATE SKIP LOCKED)
  AND f.code = n.recipient AND f.retired_on IS NOT NULL
RETURNING n.type, n.channel
""")


def on_focal_points_changed(conn: sa.Connection, changes: dict) -> None:
    """Run where the replica takes a metadata change, in its transaction."""
    requeue_for_new_addresses(conn, changes)
    retired = sorted({fp["code"] for fp in changes.get("focal_points") or [] if fp.get("retired_on")})
    if retired:
        gone = conn.execute(_RETIRED, {"codes": retired}).all()
        for kind, channel in gone:  # (as the replica takes the change)
            metrics.notifications_total.labels(type=kind, channel=channel, status="FAILED").inc()
        log.info("%d pending alert(s) given up: their focal point retired (%s)", len(gone), ", ".join(retired))


def requeue_for_new_addresses(conn: sa.Connection, changes: dict) -> int:
    codes = sorted({fp["code"] for fp in changes.get("focal_points") or [] if fp.get("email")})
    if not codes:
        return 0
    requeued = conn.execute(_REQUEUE, {"codes": codes, "no_address": NO_ADDRESS}).rowcount
    if requeued:
        log.info("%d failed e-mail alert(s) queued again for a focal point's new address", requeued)
    return requeued


# Who a notification goes to, as the focal point is now: an address (or language) corrected
# after the alert was recorded is the one its next attempt uses
_CONTACT = sa.text(f"SELECT name, email, language, retired_on, role FROM {t.replica.focal_point.fullname} "
                   "WHERE code = :code")
# the role an alert was addressed to its recipient in (CONTRACT 7: supervisors are told of
# invalid and late returns, a unit's reporters reminded)
ADDRESSED_AS = {"REMINDER": "reporter"}


def as_addressed_now(conn: sa.Connection, row: types.SimpleNamespace) -> types.SimpleNamespace:
    """The notification with its recipient's current name, address and language in its
    details (a focal point since removed keeps those it was recorded with)."""
    contact = conn.execute(_CONTACT, {"code": row.recipient}).first()
    if contact is None:
        return types.SimpleNamespace(**{**vars(row), "retired_on": None, "role": None})
    return types.SimpleNamespace(**{**vars(row), "retired_on": contact.retired_on, "role": contact.role, "details": {
        **row.details, "recipient_name": contact.name, "email": contact.email, "language": contact.language}})


def backoff(attempts: int, first_seconds: int = 5) -> dt.timedelta:
    return dt.timedelta(seconds=min(first_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS))


IMPORTANCE = {"HIGH": {"en": "HIGH", "lo": "ສູງ"}, "MEDIUM": {"en": "MEDIUM", "lo": "ກາງ"},
              "LOW": {"en": "LOW", "lo": "ຕ່ຳ"}}


def _number(x) -> str:
    return "-" if x is None else (str(int(x)) if float(x).is_integer() else f"{x:g}")


# after a rule's figures: the comparison is what the rule wants, and it failed ("500 <= 200"
# alone read like a statement of fact)
NOT_HOLDING = {"en": "does not hold", "lo": "ບໍ່ເປັນຈິງ"}
ELSEWHERE = {"en": "It was rejected for these problems at other places of the same return:",
             "lo": "ລາຍງານຖືກປະຕິເສດຍ້ອນບັນຫາເຫຼົ່ານີ້ ຢູ່ບ່ອນອື່ນໃນລາຍງານດຽວກັນ:"}


def _lines(violations: list[dict], lang: str, where: bool = False) -> str:
    """One line per violation: the rule's name in the reader's language, then what failed
    (``where``: and the unit and period it failed at)."""
    out = []
    for v in violations:
        name = (v.get("name_lo") if lang == "lo" else None) or v.get("name") or v["rule"]
        level = IMPORTANCE.get(v["importance"], {}).get(lang, v["importance"])
        place = f" {v.get('org_unit')} {v.get('period')}:" if where else ""
        if v.get("left") is not None and v.get("right") is not None and v["operator"] in SYMBOLS:
            what = f"{_number(v['left'])} {SYMBOLS[v['operator']]} {_number(v['right'])} {NOT_HOLDING[lang]}"
            if v.get("data_element"):
                what = f"{v['data_element']}: {what}"
            out.append(f"- [{level}]{place} {name} ({v['rule']}): {what}")
        else:
            out.append(f"- [{level}]{place} {name} ({v['rule']}): {v.get('message', '')}")
    return "\n".join(out) or "-"


def _problems(details: dict, lang: str) -> str:
    """The unit's own problems, and those elsewhere in the return that got it rejected."""
    own = _lines(details.get("violations", []), lang)
    elsewhere = details.get("rejected_for")
    return own if not elsewhere else f"{own}\n{ELSEWHERE[lang]}\n{_lines(elsewhere, lang, where=True)}"


_ON_TIME_UNTIL = {"en": "on time until", "lo": "ທັນເວລາຮອດວັນທີ"}


def _late_lines(late: list[dict], lang: str) -> str:
    # the date said for what it is: the last day that counted as on time (a bare date
    # at the end of the line read as anything)
    return "\n".join(f"- {x['names']['data_set'][lang]} ({x['data_set']}) {x['period']}: "
                     f"{x['names']['org_unit'][lang]} ({x['org_unit']}), {_ON_TIME_UNTIL[lang]} {x['deadline']}"
                     for x in late) or "-"


_INTERNATIONAL_TO = "international-address@statnet.invalid"


def wire_bytes(msg: MIMEText, address: str) -> bytes:
    """The message as sent: CRLF line ends (sendmail passes bytes on as they are; send_message's
    own generator would, but it cannot send an international address from compat32), and an
    international address written into ``To`` as UTF-8 (the message then travels SMTPUTF8)."""
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    if address.isascii():
        return raw
    return raw.replace(f"To: {_INTERNATIONAL_TO}\r\n".encode(), f"To: {address}\r\n".encode("utf-8"), 1)


# UTF-8 bytes per encoded word: base64 makes 56 characters of 42, the word 68 with its
# "=?utf-8?b?" and "?=" (RFC 2047 allows 75; email.header's were 76), so that the first
# fits on the "Subject: " line (else the header began with a fold, read as a leading space)
_WORD_BYTES = 42


def encoded_words(text: str) -> str:
    """The whole of ``text`` as RFC 2047 encoded words, cut between characters, spaces inside
    the words (whitespace between words is not part of the text: the default policy's
    folding dropped the space between ")" and Lao text)."""
    chunks, chunk = [], ""
    for ch in text:
        if chunk and len((chunk + ch).encode("utf-8")) > _WORD_BYTES:
            chunks.append(chunk)
            chunk = ""
        chunk += ch
    chunks.append(chunk)
    return " ".join(f"=?utf-8?b?{base64.b64encode(c.encode('utf-8')).decode('ascii')}?=" for c in chunks)


def compose(row, settings: Settings) -> MIMEText:
    d = row.details
    lang = d.get("language", "lo")
    lang = lang if lang in ("lo", "en") else "en"
    names = d.get("names", {"data_set": {lang: row.data_set}, "org_unit": {lang: row.org_unit}})
    fields = {"recipient": d.get("recipient_name", row.recipient),
              "data_set": f'{names["data_set"][lang]} ({row.data_set})',
              "org_unit": f'{names["org_unit"][lang]} ({row.org_unit})',
              "period": row.period, "due_date": d.get("due_date", ""), "deadline": d.get("deadline", ""),
              "return_id": d.get("return_id", ""), "violations": _problems(d, lang),
              "outcome": OUTCOMES.get(d.get("outcome", ""), {}).get(lang, d.get("outcome", "")),
              "count": d.get("count", 0), "lines": _late_lines(d.get("late", []), lang)}
    subject, body = render(row.type, lang, **fields)
    if d.get("answered_since"):
        body = body.replace("\n\n-- statnet", ANSWERED_SINCE[row.type][lang] + "\n\n-- statnet")
    msg = MIMEText(body, "plain", "utf-8")
    msg["Subject"] = encoded_words(subject)
    msg["From"] = settings.smtp_from
    # an address in Lao script can't be an encoded word (RFC 2047 forbids them in an address:
    # readers saw a local part with no domain); it goes raw, as RFC 6532 says, put in by
    # ``wire_bytes``, since compat32 would encode it
    msg["To"] = d["email"] if d["email"].isascii() else _INTERNATIONAL_TO
    msg["Date"] = format_datetime(dt.datetime.now(LOCAL_TZ))  # +0700, as times are shown
    domain = settings.smtp_from.split("@")[-1] or "localhost"
    msg["Message-ID"] = f"<statnet-notification-{row.id}@{domain}>"
    msg["X-Statnet-Notification"] = str(row.id)
    msg["X-Statnet-Type"] = row.type
    return msg


_ENHANCED_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\b")


def address_refused(code: int, text: bytes | str) -> bool:
    """Whether a RCPT reply refuses the address itself, for good: a 5xx whose enhanced
    status (RFC 3463) is 5.1.x (bad mailbox, bad syntax, moved), or without one a 550,
    551 or 553 that says nothing of relaying. A 5.7.x (relay access denied, policy),
    5.3.x or 5.4.x is the relay's configuration or its trouble, every message's: once the
    operator mends it the alert must still go (CONTRACT 7: nothing is dropped)."""
    if code < 500:
        return False
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    status = _ENHANCED_STATUS.match(text.strip())
    if status:
        return status.group(2) == "1"
    return code in (550, 551, 553) and "relay" not in text.lower()


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def failure_reason(exc: BaseException) -> str:
    """A failed delivery as an operator reads it in ``lastError``: the relay's code and
    words, not Python's repr of them (``{'g@example.la': (550, b'5.1.1 <g@...')}``)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "recipient refused: " + "; ".join(f"{address}: {code} {_text(text)}"
                                                 for address, (code, text) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}"


def log_in(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH as the relay offers it; a login or password in Lao script by PLAIN in UTF-8 (RFC
    4616), which smtplib's ``login`` cannot send (it encodes them as ASCII)."""
    if (username + password).isascii():
        smtp.login(username, password)
        return
    if "plain" not in smtp.esmtp_features.get("auth", "").lower().split():
        raise smtplib.SMTPNotSupportedError("the relay offers no AUTH PLAIN, the one mechanism that "
                                            "carries a login or password beyond ASCII")
    token = base64.b64encode(f"\0{username}\0{password}".encode("utf-8")).decode("ascii")
    code, text = smtp.docmd("AUTH", f"PLAIN {token}")
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, text)


def relay(settings: Settings) -> smtplib.SMTP:
    """A session with the province's relay, greeted, secured and logged in as its settings say.
    A relay that refuses the login or the certificate is retried like one that is down: the
    operator's fix of the settings or the relay lets every alert waiting go."""
    if settings.smtp_security == "tls":  # implicit TLS (port 465)
        smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT,
                                context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT)
    try:
        smtp.ehlo_or_helo_if_needed()
        if settings.smtp_security == "starttls":
            # the certificate is checked against the system's CAs (SSL_CERT_FILE names others):
            # credentials and supervisors' addresses are not sent to whoever answers
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo_or_helo_if_needed()  # the extensions again, as said over TLS
        if settings.smtp_username is not None:
            log_in(smtp, settings.smtp_username, settings.smtp_password)
    except BaseException:
        smtp.close()
        raise
    return smtp


def send_email(row, settings: Settings) -> None:
    address = row.details.get("email")
    if not address:
        raise PermanentFailure(NO_ADDRESS % row.recipient)
    msg = compose(row, settings)
    # an address in Lao script (RFC 6531) travels only through a relay that says SMTPUTF8
    international = not address.isascii()
    try:
        smtp = relay(settings)
        try:
            if international and not smtp.has_extn("smtputf8"):
                raise PermanentFailure(f"the SMTP relay does not take international addresses (SMTPUTF8): "
                                       f"{address}")
            smtp.sendmail(settings.smtp_from, [address], wire_bytes(msg, address),
                          mail_options=["SMTPUTF8"] if international else [])
        finally:
            # once DATA is answered 250 the message is the relay's: a QUIT it refuses or cuts
            # short is not a failed delivery (``with SMTP()`` raised it, and each retry sent
            # the same e-mail again: four copies from a relay answering QUIT with 421)
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
    except smtplib.SMTPRecipientsRefused as exc:
        # the address refused for good (5.1.x, no such mailbox) fails now; anything else
        # (4xx greylisting or a full mailbox, a 5xx "relay access denied" that the
        # operator's fix of the relay cures) is retried until GIVE_UP_AFTER
        if all(address_refused(code, text) for code, text in exc.recipients.values()):
            raise PermanentFailure(failure_reason(exc)) from None
        raise
    # A message refused after DATA, 5xx included, is retried until GIVE_UP_AFTER, as a refused
    # sender is: an alert's content is statnet's own, so a refusal of it is the relay's
    # configuration or its trouble ("500 Error: (FileNotFoundError)" from a relay that could
    # not store it), every alert's, which the operator's fix cures; made final at once, the
    # alerts of that time were lost (CONTRACT 7: nothing is dropped)


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def webhook_details(details):
    """An alert's details as the HTTP API shows its objects: keys in camelCase, and each
    violation as ``GET /api/submissions/{id}`` shows it (its numbers as the return's: 0,
    not the 0.0 of a float carried through the event)."""
    if isinstance(details, list):
        return [webhook_details(item) for item in details]
    if not isinstance(details, dict):
        return details
    return {_camel(key): ([violation_out(v) for v in value] if key in ("violations", "rejected_for")
                          else webhook_details(value))
            for key, value in details.items()}


def send_webhook(row, settings: Settings) -> None:
    """Every failure is retried, 4xx included: an endpoint misrouted or redeployed for an
    hour must not lose the alerts of that hour."""
    payload = {"id": row.id, "type": row.type, "recipient": row.recipient, "orgUnit": row.org_unit,
               "dataSet": row.data_set, "period": row.period, "createdAt": show(row.created_at),
               "details": webhook_details(row.details)}
    request = urllib.request.Request(settings.alert_webhook, data=json.dumps(payload, ensure_ascii=False).encode(),
                                     # the alert's own id, the same on every attempt: an endpoint that
                                     # answered too late (our timeout) or just before a crash gets the
                                     # alert again, and can tell it is the same one (as Message-ID does)
                                     headers={"Content-Type": "application/json; charset=utf-8",
                                              "Idempotency-Key": f"statnet-notification-{row.id}"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise WebhookRefused(exc.code, retry_after(exc.headers.get("Retry-After"))) from None


# an endpoint's Retry-After is waited for (a 429 retried on our own backoff was hammered at
# +6, +10 and +20 s), up to an hour: an alert is not held back a day because a proxy said so
MAX_RETRY_AFTER = dt.timedelta(hours=1)


def retry_after(value: str | None, now: dt.datetime | None = None) -> dt.timedelta | None:
    """A Retry-After header (seconds, or an HTTP date) as a wait, at most ``MAX_RETRY_AFTER``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        wait = dt.timedelta(seconds=int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        wait = when - (now or dt.datetime.now(dt.timezone.utc))
    return min(max(wait, dt.timedelta(0)), MAX_RETRY_AFTER)


class WebhookRefused(Exception):
    def __init__(self, status: int, wait: dt.timedelta | None = None):
        super().__init__(f"webhook answered {status}" + (f" (retry after {int(wait.total_seconds())} s)"
                                                         if wait is not None else ""))
        self.wait = wait


CHANNELS = {"email": send_email, "webhook": send_webhook}

# A digest reader's LATE_RETURN alerts go out inside their LATE_DIGEST (deadlines.py): when
# the digest is sent, or given up, so are the alerts of that recipient and channel that it
# lists, those and no others (one recorded after it was made is listed in the next)
# (the alerts of a digest's lines, :late, that wait for it: alias n, the lines l)
_CARRIED = """jsonb_to_recordset(CAST(:late AS jsonb)) AS l(data_set text, period text, org_unit text)
WHERE n.type = 'LATE_RETURN' AND n.recipient = :recipient AND n.channel = :channel AND n.status = 'PENDING'
  AND n.details->>'delivered_by' = 'LATE_DIGEST'
  AND n.data_set = l.data_set AND n.period = l.period AND n.org_unit = l.org_unit"""
DIGESTED = sa.text(f"""
UPDATE notify.notification n SET status = :status, attempts = :attempts, sent_at = :sent_at,
                                 last_error = :last_error
FROM {_CARRIED}
""")


# Places (data set, unit, period) an accepted return (or a history load) has answered
_ANSWERED = sa.text(f"""
SELECT x.data_set, x.org_unit, x.period
FROM jsonb_to_recordset(CAST(:places AS jsonb)) AS x(data_set text, org_unit text, period text)
WHERE EXISTS (SELECT 1 FROM {t.received.fullname} r
              WHERE r.data_set = x.data_set AND r.org_unit = x.org_unit AND r.period = x.period)
""")
# a digest's lines answered before it went out: the alerts it would have carried are
# withdrawn with them (one a deadline check holds is left to that check, which withdraws it)
_WITHDRAW_CARRIED = sa.text(f"""
DELETE FROM notify.notification d WHERE d.id IN (
    SELECT n.id FROM notify.notification n, {_CARRIED}
    FOR UPDATE OF n SKIP LOCKED)
""")


def still_true(conn: sa.Connection, row: types.SimpleNamespace,
               withdrawn: list[tuple[str, str, int]]) -> types.SimpleNamespace | None:
    """The notification as it is to be sent now, or None once withdrawn. A late return or a
    reminder whose return has been accepted while it waited (the relay down, a retry's
    backoff) goes all the same, saying so (``answered_since``): recorded, it is the
    recipient's (CONTRACT 7: nothing is dropped; deleted, it vanished from their list, and
    the webhook had told them what the e-mail never did). A digest, a reader's own summary
    of the day, drops its lines answered since it was made, and is withdrawn when none is
    left (deleted, never sent, as the deadline check withdraws a digest reader's answered
    alert). What was withdrawn goes to ``withdrawn`` ((type, channel, how many): counted
    once committed)."""
    if row.type in ("LATE_RETURN", "REMINDER"):
        lines = [{"data_set": row.data_set, "org_unit": row.org_unit, "period": row.period}]
    elif row.type == "LATE_DIGEST":
        lines = row.details.get("late", [])
    else:
        return row
    answered = {tuple(a) for a in conn.execute(_ANSWERED, {"places": json.dumps(lines)})}
    if not answered:
        return row
    n = t.notification
    if row.type != "LATE_DIGEST":
        # still sent, saying so: an alert recorded is never dropped (CONTRACT 7), and the
        # webhook, which took it while the relay was down, and the e-mail tell the same
        log.info("notification %d (%s to %s): %s %s %s has been received since; sent saying so", row.id,
                 row.type, row.recipient, row.data_set, row.org_unit, row.period)
        return types.SimpleNamespace(**{**vars(row), "details": {**row.details, "answered_since": True}})
    late, gone = [], []
    for line in lines:
        (gone if (line["data_set"], line["org_unit"], line["period"]) in answered else late).append(line)
    carried = conn.execute(_WITHDRAW_CARRIED, {"recipient": row.recipient, "channel": row.channel,
                                               "late": json.dumps(gone)}).rowcount
    withdrawn.append(("LATE_RETURN", row.channel, carried))
    if not late:
        conn.execute(n.delete().where(n.c.id == row.id))
        withdrawn.append((row.type, row.channel, 1))
        log.info("digest %d to %s withdrawn: its %d late return(s) have been received since", row.id,
                 row.recipient, len(lines))
        return None
    details = {**row.details, "late": late, "count": len(late)}
    conn.execute(n.update().where(n.c.id == row.id).values(details=details))
    log.info("digest %d to %s: %d of its late returns received since, not listed", row.id, row.recipient,
             len(lines) - len(late))
    return types.SimpleNamespace(**{**vars(row), "details": details})


class Dispatcher(Pump):
    """Sends due notifications of one channel. Each channel has its own, two lanes of them
    (``Outgoing``; rows are taken ``SKIP LOCKED``): a webhook that hangs for its timeout
    holds up no e-mail (one loop for both delivered 8 e-mails in two minutes behind a
    hanging webhook), and one SMTP conversation that stalls holds up one lane, not every
    e-mail behind it."""

    poll_seconds = 2.0
    batch = 20

    def __init__(self, channel: str, lane: int = 0):
        super().__init__()
        self.channel = channel
        self.lane = lane
        self.name = f"alert-dispatcher-{channel}-{lane}"

    @property
    def sharing_key(self):
        return (type(self), self.channel, self.lane)  # each its own loop, not one for all

    def setup(self):
        self.settings = Settings.of(self.container)
        self.engine = engine_for(self.settings.database_url)

    def work(self) -> int:
        sent = 0
        while sent < self.batch and self.deliver_one(self.channel):
            sent += 1
        return sent

    def deliver_one(self, channel: str) -> bool:
        delivered: list = []  # (row, attempts) once the channel has taken the alert
        try:
            return self._deliver_one(channel, delivered)
        except sa.exc.DBAPIError:
            if not delivered:
                raise
            # the alert is delivered, but recording it failed (the connection cut between the
            # relay's 250 and the commit): record it on a new connection rather than leave it
            # PENDING, which sent it again (a crash in that instant still does: the fixed
            # Message-ID and Idempotency-Key let the receiving end tell)
            self._record_delivered(*delivered[0])
            return True

    def _record_delivered(self, row, attempts: int, tries: int = 5) -> None:
        for attempt in range(tries):
            try:
                with self.engine.begin() as conn:
                    carried = self._sent(conn, row, attempts)
                if carried is not None:
                    self._count_sent(row, carried)
                    log.info("notification %d delivered; recorded on a second connection", row.id)
                return
            except sa.exc.DBAPIError:
                if attempt == tries - 1:
                    raise
                time.sleep(min(0.2 * 2 ** attempt, 2))

    def _sent(self, conn, row, attempts: int) -> int | None:
        """Mark the row SENT, and the alerts a digest carried (how many: counted once
        committed); None if it was not PENDING any more (recorded already)."""
        n = t.notification
        marked = conn.execute(n.update().where(n.c.id == row.id, n.c.status == "PENDING").values(
            status="SENT", attempts=attempts, sent_at=sa.func.now(), last_error=None)).rowcount
        if not marked:
            return None
        return self._with_digest(conn, row, "SENT", attempts, None)

    @staticmethod
    def _count_sent(row, carried: int) -> None:
        metrics.notifications_total.labels(type=row.type, channel=row.channel, status="SENT").inc()
        if carried:
            metrics.notifications_total.labels(type="LATE_RETURN", channel=row.channel, status="SENT").inc(carried)
        log.info("notification %d (%s to %s by %s) sent", row.id, row.type, row.recipient, row.channel)

    def _deliver_one(self, channel: str, delivered: list) -> bool:
        withdrawn: list[tuple[str, str, int]] = []
        found = self._deliver_or_withdraw(channel, delivered, withdrawn)
        for kind, its_channel, count in withdrawn:  # (counted once committed: a rollback raised)
            metrics.notifications_total.labels(type=kind, channel=its_channel, status="WITHDRAWN").inc(count)
        return found

    def _deliver_or_withdraw(self, channel: str, delivered: list, withdrawn: list) -> bool:
        n = t.notification
        carried = None  # the alerts a digest carried, once this one is recorded SENT
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(n).where(n.c.status == "PENDING", n.c.next_attempt_at <= sa.func.now(),
                                   n.c.channel == channel)
                .order_by(n.c.next_attempt_at, n.c.id).limit(1)
                .with_for_update(skip_locked=True)).first()
            if row is None:
                return False
            row = still_true(conn, types.SimpleNamespace(**row._mapping), withdrawn)
            if row is None:
                return True
            row = as_addressed_now(conn, row)
            attempts = row.attempts + 1
            if row.retired_on is not None:  # (recorded before notify heard of it)
                self._mark(conn, row, "FAILED", attempts, f"focal point {row.recipient} retired on {row.retired_on}")
                return True
            addressed_as = ADDRESSED_AS.get(row.type, "supervisor")
            if row.role not in (None, addressed_as):  # a supervisor made a reporter while it waited
                self._mark(conn, row, "FAILED", attempts, f"focal point {row.recipient} is a {row.role} now, "
                                                          f"not the {addressed_as} this {row.type} was for")
                return True
            try:
                CHANNELS[row.channel](row, self.settings)
            except PermanentFailure as exc:
                self._mark(conn, row, "FAILED", attempts, str(exc))
            except Exception as exc:
                # anything else is this notification's failure, retried with backoff: never
                # the round's (one that raised out of here was picked first again and again,
                # and held every alert of every channel behind it)
                expected = isinstance(exc, (OSError, smtplib.SMTPException, http.client.HTTPException,
                                            WebhookRefused))
                if not expected:
                    log.warning("notification %d: unexpected failure", row.id, exc_info=True)
                gave_up = dt.datetime.now(dt.timezone.utc) - row.created_at >= GIVE_UP_AFTER
                self._mark(conn, row, "FAILED" if gave_up else "PENDING", attempts, failure_reason(exc),
                           getattr(exc, "wait", None))
            else:
                delivered.append((row, attempts))
                carried = self._sent(conn, row, attempts)
        if carried is not None:  # (counted once committed)
            self._count_sent(row, carried)
        return True

    def _with_digest(self, conn, row, status: str, attempts: int, reason: str | None) -> int:
        """The alerts a digest carried share its fate (see DIGESTED); how many."""
        if row.type != "LATE_DIGEST":
            return 0
        return conn.execute(DIGESTED, {
            "status": status, "attempts": attempts, "last_error": reason, "recipient": row.recipient,
            "channel": row.channel, "late": json.dumps(row.details.get("late", [])),
            "sent_at": dt.datetime.now(dt.timezone.utc) if status == "SENT" else None}).rowcount

    def _mark(self, conn, row, status: str, attempts: int, reason: str, wait: dt.timedelta | None = None) -> None:
        n = t.notification
        conn.execute(n.update().where(n.c.id == row.id).values(
            status=status, attempts=attempts, last_error=reason[:1000],
            # the endpoint's own Retry-After where it said one and it is longer
            next_attempt_at=sa.func.now() + max(backoff(attempts, self.settings.notify_retry_seconds),
                                                wait or dt.timedelta(0))))
        metrics.notifications_total.labels(type=row.type, channel=row.channel,
                                           status="FAILED" if status == "FAILED" else "RETRY").inc()
        if status == "FAILED":
            carried = self._with_digest(conn, row, "FAILED", attempts, reason[:1000])
            if carried:
                metrics.notifications_total.labels(type="LATE_RETURN", channel=row.channel,
                                                   status="FAILED").inc(carried)
        log.warning("notification %d (%s to %s by %s) attempt %d failed: %s%s", row.id, row.type,
                    row.recipient, row.channel, attempts, reason,
                    "" if status == "PENDING" else " (gave up)")
