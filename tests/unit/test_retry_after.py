"""A webhook's Retry-After is waited for (a 429 was retried on statnet's own backoff, at +6,
+10 and +20 s: a rate-limited endpoint was hammered), up to an hour."""
from __future__ import annotations

import datetime as dt
import types
from email.utils import format_datetime

import pytest

from services.notify.dispatcher import MAX_RETRY_AFTER, WebhookRefused, retry_after, send_webhook
from tests.support.relay import ScriptedWebhook

NOW = dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.timezone.utc)


def test_seconds_and_dates_are_read_and_capped_at_an_hour():
    assert retry_after("120", NOW) == dt.timedelta(seconds=120)
    assert retry_after(" 0 ", NOW) == dt.timedelta(0)
    assert retry_after("86400", NOW) == MAX_RETRY_AFTER == dt.timedelta(hours=1)
    assert retry_after(format_datetime(NOW + dt.timedelta(seconds=90), usegmt=True), NOW) == dt.timedelta(seconds=90)
    assert retry_after(format_datetime(NOW - dt.timedelta(days=1), usegmt=True), NOW) == dt.timedelta(0)
    for unread in (None, "", "soon", "-5", "1.5"):
        assert retry_after(unread, NOW) is None


@pytest.mark.parametrize("status,headers,wait", [
    (429, {"Retry-After": "300"}, dt.timedelta(seconds=300)),
    (503, {"Retry-After": "7"}, dt.timedelta(seconds=7)),
    (500, {}, None),
])
def test_a_refusal_carries_the_endpoints_wait(status, headers, wait):
    hook = ScriptedWebhook([(status, headers)])
    row = types.SimpleNamespace(id=1, type="INVALID_RETURN", recipient="FP", org_unit="V1", data_set="DS",
                                period="202611", created_at=NOW, details={})
    try:
        with pytest.raises(WebhookRefused) as refused:
            send_webhook(row, types.SimpleNamespace(alert_webhook=hook.url))
        assert refused.value.wait == wait and str(status) in str(refused.value)
    finally:
        hook.close()
