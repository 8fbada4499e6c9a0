"""Uploads sent slowly, or stalled after their first bytes, hold no worker: the gateway
reads a body in the connection's own green thread before a worker takes the request. Once
21 stalled uploads held all 20 workers, and every request, /health included, waited for
as long as they did: for ever, as the server had no socket timeout."""
from __future__ import annotations

import socket
import time

import pytest
import requests

from services.gateway import http

STALLED = 25  # more than STATNET_MAX_WORKERS (20)


def stalled_upload(settings, token: str, length: int, sent: bytes = b"{") -> socket.socket:
    """A POST whose headers promise ``length`` bytes of body, of which ``sent`` come."""
    sock = socket.create_connection((settings.http_host, settings.http_port), timeout=10)
    sock.sendall((f"POST /api/dataValueSets HTTP/1.1\r\nHost: statnet\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode() + sent)
    return sock


def answer(sock: socket.socket) -> str:
    sock.settimeout(10)
    return sock.recv(65536).decode("utf-8", "replace")


@pytest.fixture
def stalled(settings):
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def test_stalled_uploads_hold_no_worker(system, settings, stalled):
    stalled += [stalled_upload(settings, settings.admin_token, 1000) for _ in range(STALLED)]
    time.sleep(1)  # every one of them under way
    started = time.monotonic()
    assert requests.get(f"http://{settings.http_address}/health", timeout=10).status_code == 200
    r = system.post("/api/deadlines/check?asOf=2026-01-10")  # a worker, an RPC, the database
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 10
    # and a stalled one completed is answered as any body is
    stalled[0].sendall(b" " * 998 + b"}")
    assert " 400 " in answer(stalled[0]).splitlines()[0]


def test_bodies_beyond_the_budget_are_told_to_come_back(system, settings, stalled, monkeypatch):
    """What is buffered at once is bounded: 20 bodies of 5 MB promised and not sent take it
    all (the memory a burst of slow uploads may hold); the next is a 503 with Retry-After,
    and once they are gone, uploads go through again."""
    per_body = http.MAX_BODY
    fits = http.BUFFERED_AT_ONCE // per_body
    stalled += [stalled_upload(settings, settings.admin_token, per_body) for _ in range(fits)]
    time.sleep(1)
    extra = stalled_upload(settings, settings.admin_token, 10)
    stalled.append(extra)
    reply = answer(extra)
    assert reply.startswith("HTTP/1.1 503") and "Retry-After: 5" in reply and "too many uploads" in reply, reply
    for s in stalled[:fits]:
        s.close()
    time.sleep(1)
    r = system.post("/api/dataValueSets", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text


def test_a_body_that_does_not_come_in_time_is_a_408(system, settings, stalled, monkeypatch):
    monkeypatch.setattr(http, "BODY_GRACE_SECONDS", 1)
    monkeypatch.setattr(http, "MIN_BYTES_PER_SECOND", 10 ** 9)
    sock = stalled_upload(settings, settings.admin_token, 1000)
    stalled.append(sock)
    started = time.monotonic()
    reply = answer(sock)
    assert reply.startswith("HTTP/1.1 408") and "did not arrive in time" in reply, reply
    assert time.monotonic() - started < 5
