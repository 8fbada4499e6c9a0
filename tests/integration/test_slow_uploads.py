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
from tests.support.builders import tree, village_data_set

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
    # and the connection is closed: the rest of that body, and a request after it, are not
    # read as one (eventlet read on to the declared length and misread the next request)
    sock.sendall(b" " * 999 + b"}GET /health HTTP/1.1\r\nHost: statnet\r\n\r\n")
    sock.settimeout(10)
    rest = b""
    while chunk := sock.recv(65536):
        rest += chunk
    assert b"HTTP/" not in rest, rest
    # counted, as a route's own answers are (it was in no metric)
    scraped = requests.get(f"http://{settings.http_address}/metrics", timeout=10).text
    assert 'statnet_http_requests_total{method="POST",route="/api/dataValueSets",status="408"}' in scraped


def test_a_body_cut_short_is_refused_not_stored_as_what_came(system, settings, stalled):
    """A CSV whose sender closed after "250" of "25000": what came is a return too, of 250
    households (stored as such, 202), not the one meant."""
    t, units = tree("CUT", districts=1, villages=1)
    codes, doc = village_data_set("CUT", rules=False)
    system.import_metadata({**doc, "orgUnits": units})
    body = ("dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value\n"
            f"{codes['hh']},2025,{t.all_villages[0]},default,default,25000\n").encode()
    cut = body.index(b"25000") + 3
    sock = socket.create_connection((settings.http_host, settings.http_port), timeout=10)
    stalled.append(sock)
    sock.sendall((f"POST /api/dataValueSets HTTP/1.1\r\nHost: statnet\r\nAuthorization: Bearer "
                  f"{settings.admin_token}\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n"
                  ).encode() + body[:cut])
    sock.shutdown(socket.SHUT_WR)
    reply = answer(sock)
    assert reply.startswith("HTTP/1.1 400"), reply
    assert f"ended after {cut} of the {len(body)} bytes its Content-Length says" in reply, reply
    assert system.analytics(codes["hh"], t.all_villages[0], "2025") == {}


def test_a_broken_chunked_body_is_a_json_400(system, settings, stalled):
    sock = socket.create_connection((settings.http_host, settings.http_port), timeout=10)
    stalled.append(sock)
    sock.sendall((f"POST /api/dataValueSets HTTP/1.1\r\nHost: statnet\r\nAuthorization: Bearer "
                  f"{settings.admin_token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                  "\r\nzz\r\n{}\r\n0\r\n\r\n").encode())
    reply = answer(sock)
    assert reply.startswith("HTTP/1.1 400") and "application/json" in reply, reply
    assert "chunked encoding is broken" in reply, reply
