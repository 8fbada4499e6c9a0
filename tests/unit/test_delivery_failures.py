"""An alert's ``lastError`` in words an operator reads: the relay's code and text, not
Python's repr of bytes and tuples."""
from __future__ import annotations

import smtplib

from services.notify.dispatcher import failure_reason


def test_a_refused_recipient_reads_as_the_relay_said_it():
    exc = smtplib.SMTPRecipientsRefused({"ສົມ@example.la": (550, "5.1.1 User unknown".encode()),
                                         "b@example.la": (451, b"4.7.1 Try again later")})
    assert failure_reason(exc) == ("recipient refused: ສົມ@example.la: 550 5.1.1 User unknown; "
                                   "b@example.la: 451 4.7.1 Try again later")


def test_a_refusal_after_data_names_its_kind_code_and_text():
    assert failure_reason(smtplib.SMTPDataError(554, b"5.6.0 Message rejected")) == \
        "SMTPDataError: 554 5.6.0 Message rejected"
    # bytes that are not UTF-8 do not stop the reason being written
    assert failure_reason(smtplib.SMTPSenderRefused(553, b"bad \xff sender", "statnet@x")) == \
        "SMTPSenderRefused: 553 bad \ufffd sender"


def test_anything_else_is_its_kind_and_message():
    assert failure_reason(ConnectionRefusedError(111, "Connection refused")) == \
        "ConnectionRefusedError: [Errno 111] Connection refused"
