"""Misbehaving delivery endpoints, real sockets: an SMTP relay that greylists and a
webhook whose answers a test scripts (hang, a broken status line, 404, then 204).

What a province's relay and a sector system's endpoint do on a bad day, so that
delivery is tested against them rather than against a mock of smtplib or urllib.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class GreylistingRelay:
    """A minimal ESMTP server (SMTPUTF8 announced) that answers ``451`` to the first RCPT
    of each address in ``greylist``, ``554 5.7.1`` relay access denied to the first of each
    in ``deny_relay`` (a relay misconfigured, then mended), ``550 5.1.1`` to every RCPT of
    ``unknown``, ``500`` after DATA to the first message for each of ``refuse_data`` (a relay
failing to store it, as aiosmtpd's mailbox answers when its folder is missing), ``quit_reply`` to
    QUIT, and keeps every message it accepts as
    ``(envelope recipients, mail options, message bytes)``."""

    def __init__(self, greylist: set[str] = frozenset(), refuse_data: set[str] = frozenset(),
                 deny_relay: set[str] = frozenset(), unknown: set[str] = frozenset(),
                 quit_reply: str = "221 bye"):
        self.greylist = set(greylist)
        self.deny_relay = set(deny_relay)
        self.unknown = set(unknown)
        self.quit_reply = quit_reply
        self.refuse_data = set(refuse_data)  # the first message to each is refused after DATA (500)
        self.refused: list[str] = []
        self.accepted: list[tuple[list[str], str, bytes]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        f = conn.makefile("rwb")

        def say(line: str):
            f.write(line.encode() + b"\r\n")
            f.flush()

        say("220 relay.example.la ESMTP")
        rcpts, options = [], ""
        try:
            while True:
                line = f.readline().decode("utf-8").rstrip("\r\n")
                verb = line[:4].upper()
                if verb == "EHLO":
                    say("250-relay.example.la")
                    say("250-8BITMIME")
                    say("250 SMTPUTF8")
                elif verb == "HELO":
                    say("250 relay.example.la")
                elif verb == "MAIL":
                    rcpts, options = [], line
                    say("250 OK")
                elif verb == "RCPT":
                    address = line.split("<", 1)[1].split(">", 1)[0]
                    if address in self.greylist:
                        self.greylist.discard(address)
                        self.refused.append(address)
                        say("451 4.7.1 Greylisted, try again later")
                    elif address in self.deny_relay:
                        self.deny_relay.discard(address)
                        self.refused.append(address)
                        say(f"554 5.7.1 <{address}>: Relay access denied")
                    elif address in self.unknown:
                        self.refused.append(address)
                        say(f"550 5.1.1 <{address}>: Recipient address rejected: User unknown")
                    else:
                        rcpts.append(address)
                        say("250 OK")
                elif verb == "DATA":
                    say("354 go ahead")
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        data += f.readline()
                    if self.refuse_data & set(rcpts):
                        self.refuse_data -= set(rcpts)
                        say("500 Error: (FileNotFoundError) [Errno 2] No such file or directory")
                        continue
                    self.accepted.append((rcpts, options, data))
                    say("250 OK queued")
                elif verb == "RSET":
                    say("250 OK")
                elif verb == "QUIT":
                    say(self.quit_reply)
                    return
                elif not line:
                    return
                else:
                    say("502 not here")
        finally:
            conn.close()

    def close(self):
        # wake the accept first: a socket closed under a (green) thread blocked in accept
        # leaves its descriptor watched, and the next connection given that number fails
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()


class ScriptedWebhook:
    """Answers its first requests as ``script`` says ("hang", "garbage", a status code, or
    a (status code, headers) pair), then 204; keeps the JSON of every request it answered
    204."""

    def __init__(self, script: list, hang_seconds: float = 20):
        self.script = list(script)
        self.received: list[dict] = []
        self.answers: list = []
        self.keys: list = []  # the Idempotency-Key header of each request kept
        hook = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    step = hook.script.pop(0) if hook.script else 204
                    hook.answers.append(step)
                if step == "hang":
                    time.sleep(hang_seconds)
                    return
                if step == "garbage":
                    self.wfile.write(b"GARBAGE\r\n\r\n")
                    return
                status, headers = step if isinstance(step, tuple) else (step, {})
                if status == 204:
                    hook.received.append(json.loads(body.decode("utf-8")))
                    hook.keys.append(self.headers["Idempotency-Key"])
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
