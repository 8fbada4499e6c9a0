"""Delivering alerts: SMTP and webhook, retried with backoff, never twice at once.

Each pending notification is sent inside its own transaction that holds the
row lock (``FOR UPDATE SKIP LOCKED``), so two notify instances never send the
same one, and it is marked SENT in that same transaction. A crash between
the SMTP server accepting the message and the commit sends it again on
restart (at-least-once); the ``Message-ID`` is fixed per notification so a
mail system can recognise the repeat.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import smtplib
import socket
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate

import sqlalchemy as sa

from services.notify import tables as t
from services.notify.templates import OUTCOMES, render
from shared import metrics
from shared.background import Pump
from shared.config import Settings
from shared.db import engine_for
from shared.periods import show

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 50          # about 8 hours at the longest backoff
MAX_BACKOFF_SECONDS = 600
SEND_TIMEOUT = 15


class PermanentFailure(Exception):
    """Retrying cannot help (no address, the server refuses the recipient)."""


def backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(5 * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS))


def _lines(violations: list[dict]) -> str:
    return "\n".join(f"- [{v['importance']}] {v.get('message') or v['rule']}" for v in violations) or "-"


def compose(row, settings: Settings) -> EmailMessage:
    d = row.details
    lang = d.get("language", "lo")
    lang = lang if lang in ("lo", "en") else "en"
    fields = {"recipient": d.get("recipient_name", row.recipient),
              "data_set": f'{d["names"]["data_set"][lang]} ({row.data_set})',
              "org_unit": f'{d["names"]["org_unit"][lang]} ({row.org_unit})',
              "period": row.period, "due_date": d.get("due_date", ""), "deadline": d.get("deadline", ""),
              "return_id": d.get("return_id", ""), "violations": _lines(d.get("violations", [])),
              "outcome": OUTCOMES.get(d.get("outcome", ""), {}).get(lang, d.get("outcome", ""))}
    subject, body = render(row.type, lang, **fields)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = settings.smtp_from
    msg["To"] = d["email"]
    msg["Date"] = formatdate(localtime=False)
    domain = settings.smtp_from.split("@")[-1] or "localhost"
    msg["Message-ID"] = f"<statnet-notification-{row.id}@{domain}>"
    msg["X-Statnet-Notification"] = str(row.id)
    msg["X-Statnet-Type"] = row.type
    msg.set_content(body, charset="utf-8")
    return msg


def send_email(row, settings: Settings) -> None:
    if not row.details.get("email"):
        raise PermanentFailure(f"focal point {row.recipient} has no e-mail address")
    msg = compose(row, settings)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT) as smtp:
            smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentFailure(f"recipient refused: {exc.recipients}") from None


def send_webhook(row, settings: Settings) -> None:
    payload = {"id": row.id, "type": row.type, "recipient": row.recipient, "orgUnit": row.org_unit,
               "dataSet": row.data_set, "period": row.period, "createdAt": show(row.created_at),
               "details": row.details}
    request = urllib.request.Request(settings.alert_webhook, data=json.dumps(payload, ensure_ascii=False).encode(),
                                     headers={"Content-Type": "application/json; charset=utf-8"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise PermanentFailure(f"webhook answered {exc.code}") from None
        raise


CHANNELS = {"email": send_email, "webhook": send_webhook}


class Dispatcher(Pump):
    name = "alert-dispatcher"
    poll_seconds = 2.0
    batch = 20

    def setup(self):
        self.settings = Settings.of(self.container)
        self.engine = engine_for(self.settings.database_url)

    def work(self) -> int:
        sent = 0
        for _ in range(self.batch):
            if not self.deliver_one():
                break
            sent += 1
        return sent

    def deliver_one(self) -> bool:
        n = t.notification
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(n).where(n.c.status == "PENDING", n.c.next_attempt_at <= sa.func.now())
                .order_by(n.c.next_attempt_at, n.c.id).limit(1)
                .with_for_update(skip_locked=True)).first()
            if row is None:
                return False
            attempts = row.attempts + 1
            try:
                CHANNELS[row.channel](row, self.settings)
            except PermanentFailure as exc:
                self._mark(conn, row, "FAILED", attempts, str(exc))
            except (OSError, smtplib.SMTPException, socket.timeout) as exc:
                status = "FAILED" if attempts >= MAX_ATTEMPTS else "PENDING"
                self._mark(conn, row, status, attempts, f"{type(exc).__name__}: {exc}")
            else:
                conn.execute(n.update().where(n.c.id == row.id).values(
                    status="SENT", attempts=attempts, sent_at=sa.func.now(), last_error=None))
                metrics.notifications_total.labels(type=row.type, channel=row.channel, status="SENT").inc()
                log.info("notification %d (%s to %s by %s) sent", row.id, row.type, row.recipient, row.channel)
        return True

    def _mark(self, conn, row, status: str, attempts: int, reason: str) -> None:
        n = t.notification
        conn.execute(n.update().where(n.c.id == row.id).values(
            status=status, attempts=attempts, last_error=reason[:1000],
            next_attempt_at=sa.func.now() + backoff(attempts)))
        metrics.notifications_total.labels(type=row.type, channel=row.channel,
                                           status="FAILED" if status == "FAILED" else "RETRY").inc()
        log.warning("notification %d (%s to %s by %s) attempt %d failed: %s%s", row.id, row.type,
                    row.recipient, row.channel, attempts, reason,
                    "" if status == "PENDING" else " (gave up)")
