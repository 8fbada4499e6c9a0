"""Alerts through a relay that wants TLS and a login, as a province's mail server does (a
real aiosmtpd server with a test certificate): delivered when the settings say how, and
every refusal of the session (bad login, no TLS, an untrusted certificate) a failure that is
retried, never one given up, since the operator's fix of the settings lets the alert go."""
from __future__ import annotations

import pathlib
import shutil
import smtplib
import ssl
import tempfile
import types

import pytest

from services.notify.dispatcher import PermanentFailure, failure_reason, send_email
from shared import mailsink
from shared.config import Settings
from tests.conftest import free_port

TLS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "tls"
CERT, KEY = str(TLS / "relay-cert.pem"), str(TLS / "relay-key.pem")  # self-signed, for 127.0.0.1
LOGIN = ("statnet", "ລະຫັດ lao password")


class Relay:
    def __init__(self, security):
        self.port = free_port()
        self.maildir = tempfile.mkdtemp(prefix="statnet-relay-mail-")
        self.proc = mailsink.start("127.0.0.1", self.port, self.maildir, security=security,
                                   cert=CERT, key=KEY, login=":".join(LOGIN))

    def settings(self, **changes) -> Settings:
        return Settings(smtp_host="127.0.0.1", smtp_port=self.port, smtp_from="statnet@luangnamtha.la",
                        smtp_username=LOGIN[0], smtp_password=LOGIN[1]).replace(**changes)

    def mails(self):
        return mailsink.read(self.maildir)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.maildir, ignore_errors=True)


@pytest.fixture(scope="module")
def starttls():
    relay = Relay("starttls")
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def implicit_tls():
    relay = Relay("tls")
    yield relay
    relay.close()


@pytest.fixture
def trusted(monkeypatch):
    """The test certificate trusted as the province's own CA would be (SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", CERT)


def alert(n: int, email: str = "supervisor@luangnamtha.la"):
    return types.SimpleNamespace(
        id=n, type="INVALID_RETURN", recipient="FP-03-01", org_unit="0301", data_set="HEALTH_M",
        period="202610", details={"email": email, "language": "lo", "return_id": f"r-{n}",
                                  "outcome": "REJECTED", "recipient_name": "ຫົວໜ້າແຂວງ",
                                  "names": {"data_set": {"lo": "ລາຍງານສາທາລະນະສຸກ"},
                                            "org_unit": {"lo": "ເມືອງນ້ຳທາ"}}})


def sent(relay, n):
    return [m for m in relay.mails() if m["X-Statnet-Notification"] == str(n)]


def test_an_alert_goes_through_starttls_and_a_login(starttls, trusted):
    send_email(alert(1), starttls.settings(smtp_security="starttls"))
    [mail] = sent(starttls, 1)
    assert mail["To"] == "supervisor@luangnamtha.la"
    assert "ເມືອງນ້ຳທາ" in mail["Subject"] + mail.get_content()


def test_an_alert_goes_through_implicit_tls(implicit_tls, trusted):
    send_email(alert(2), implicit_tls.settings(smtp_security="tls"))
    assert len(sent(implicit_tls, 2)) == 1


@pytest.mark.parametrize("changes, error", [
    # the relay refuses the login: 535, named in lastError
    ({"smtp_security": "starttls", "smtp_password": "wrong"}, smtplib.SMTPAuthenticationError),
    # settings that forgot STARTTLS: the relay wants it before anything (530)
    ({"smtp_security": "none", "smtp_username": None, "smtp_password": None}, smtplib.SMTPSenderRefused),
])
def test_a_refused_session_is_retried_not_given_up(starttls, trusted, changes, error):
    with pytest.raises(error) as exc:
        send_email(alert(3), starttls.settings(**changes))
    assert not isinstance(exc.value, PermanentFailure)
    assert failure_reason(exc.value).startswith(error.__name__ + ": 5")
    assert sent(starttls, 3) == []


def test_a_certificate_nobody_vouches_for_gets_neither_login_nor_alert(starttls, monkeypatch):
    # whoever answers on the relay's address is not sent the password and the supervisors'
    # addresses unless its certificate is one the system (or SSL_CERT_FILE) trusts
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "missing.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(TLS / "missing"))
    with pytest.raises(ssl.SSLCertVerificationError) as exc:
        send_email(alert(4), starttls.settings(smtp_security="starttls"))
    assert not isinstance(exc.value, PermanentFailure)
    assert sent(starttls, 4) == []
