"""A local SMTP server that keeps what it receives, for the demo and the tests.

    python -m shared.mailsink --listen 127.0.0.1:8025 --maildir /tmp/mail

Each message is written to ``<maildir>/<n>.eml`` exactly as received. It is a
real SMTP server (aiosmtpd), run as its own process: the code that talks to
it is the same code that talks to a province's mail relay.
"""
from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import itertools
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time


class _Keep:
    def __init__(self, maildir: pathlib.Path, delay: float = 0.0):
        self.maildir = maildir
        self.delay = delay
        self.counter = itertools.count(len(list(maildir.glob("*.eml"))) + 1)

    async def handle_DATA(self, server, session, envelope):
        if self.delay:  # a slow relay: a sender killed meanwhile never hears the 250, yet it is kept
            await asyncio.sleep(self.delay)
        n = next(self.counter)
        tmp = self.maildir / f".{n}.tmp"
        tmp.write_bytes(envelope.original_content or envelope.content)
        tmp.rename(self.maildir / f"{n:06d}.eml")  # readers never see half a message
        return "250 OK"


def _authenticator(login: str):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    username, _, password = login.partition(":")

    def check(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == username.encode()
              and auth_data.password == password.encode())
        return AuthResult(success=ok, handled=False)
    return check


def serve(host: str, port: int, maildir: str, delay: float = 0.0, *, security: str = "none",
          cert: str | None = None, key: str | None = None, login: str | None = None) -> None:
    """``security``: ``starttls`` (required before MAIL) or ``tls`` (implicit) with ``cert`` and
    ``key``; ``login`` ("user:password"): AUTH required, as a province's relay may."""
    import ssl

    from aiosmtpd.controller import Controller

    path = pathlib.Path(maildir)
    path.mkdir(parents=True, exist_ok=True)
    options: dict = {}
    if security != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        options.update({"tls_context": context, "require_starttls": True} if security == "starttls"
                       else {"ssl_context": context})
    if login:
        # (a session over implicit TLS is TLS from its first byte, which aiosmtpd's
        # auth_require_tls knows not of: it would never offer AUTH)
        options.update(authenticator=_authenticator(login), auth_required=True,
                       auth_require_tls=security == "starttls")
    # SMTPUTF8: a focal point's address may be in Lao script (RFC 6531), as a relay may take
    controller = Controller(_Keep(path, delay), hostname=host, port=port, enable_SMTPUTF8=True, **options)
    controller.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def read(maildir: str) -> list[email.message.EmailMessage]:
    """Every message received so far, oldest first, parsed."""
    out = []
    for path in sorted(pathlib.Path(maildir).glob("*.eml")):
        out.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
    return out


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start(host: str, port: int, maildir: str, delay: float = 0.0, *, security: str = "none",
          cert: str | None = None, key: str | None = None, login: str | None = None) -> subprocess.Popen:
    """Start a sink process and wait until it accepts connections; ``delay``: seconds it
    takes over each message before it answers; the rest as ``serve`` takes them."""
    args = [sys.executable, "-m", "shared.mailsink", "--listen", f"{host}:{port}",
            "--maildir", maildir, "--delay", str(delay), "--security", security]
    args += ["--cert", cert, "--key", key] if security != "none" else []
    args += ["--login", login] if login else []
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mail sink exited: {proc.stderr.read().decode(errors='replace')}")
        if listening(host, port):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"mail sink did not listen on {host}:{port}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:8025")
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds taken over each message")
    parser.add_argument("--security", choices=("none", "starttls", "tls"), default="none")
    parser.add_argument("--cert", help="PEM certificate (with --security)")
    parser.add_argument("--key", help="PEM private key (with --security)")
    parser.add_argument("--login", help="user:password the client must log in with")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    serve(host or "127.0.0.1", int(port), args.maildir, args.delay, security=args.security,
          cert=args.cert, key=args.key, login=args.login)


if __name__ == "__main__":
    main()
