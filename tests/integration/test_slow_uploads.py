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


def test_uploads_that_trickle_hold_little_and_stop_no_one(system, settings, stalled):
    """Twenty-five connections declaring 5 MB and sending a byte: each holds one slice of
    the budget, not its declared 5 MB (taken whole, twenty of them made every upload a 503
    for 43 minutes), and a real upload goes through beside them."""
    stalled += [stalled_upload(settings, settings.admin_token, http.MAX_BODY) for _ in range(STALLED)]
    time.sleep(1)
    assert http._JsonErrorsApp.budget.held <= STALLED * http._SLICE
    r = system.post("/api/dataValueSets", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text


def test_bodies_beyond_the_budget_are_told_to_come_back(system, settings, stalled, monkeypatch):
    """What is buffered at once is bounded: bodies held past the budget make the next a
    503 with Retry-After, and once they are gone, uploads go through again."""
    monkeypatch.setattr(http._JsonErrorsApp, "budget", http._Budget(2 * http._SLICE))
    big = stalled_upload(settings, settings.admin_token, http.MAX_BODY, sent=b"{" + b" " * http._SLICE)
    stalled.append(big)
    time.sleep(1)  # its first slice read and held, its second waited for
    extra = stalled_upload(settings, settings.admin_token, 10)
    stalled.append(extra)
    reply = answer(extra)
    assert reply.startswith("HTTP/1.1 503") and "Retry-After: 5" in reply and "too many uploads" in reply, reply
    big.close()
    time.sleep(1)
    r = system.post("/api/dataValueSets", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text


def test_an_upload_without_a_token_is_refused_before_its_body_is_read(system, settings, stalled):
    sock = socket.create_connection((settings.http_host, settings.http_port), timeout=10)
    stalled.append(sock)
    sock.sendall(f"POST /api/dataValueSets HTTP/1.1\r\nHost: statnet\r\nContent-Type: application/json\r\n"
                 f"Expect: 100-continue\r\nContent-Length: {http.MAX_BODY}\r\n\r\n".encode())
    reply = answer(sock)
    assert reply.startswith("HTTP/1.1 401") and "missing bearer token" in reply, reply
    assert "100 Continue" not in reply


def test_an_upload_with_a_token_the_registry_refused_is_refused_before_its_body_is_read(system, settings, stalled):
    """A district system left with a rotated token sends its return again and again: only
    the first is read (a worker asks the registry about a token once the body is in)."""
    rotated = "rotated-" + "x" * 30
    r = system.post("/api/dataValueSets", data=b"{}", headers={"Content-Type": "application/json"}, token=rotated)
    assert r.status_code == 401 and r.json()["message"] == "unknown or rotated token", r.text
    sock = stalled_upload(settings, rotated, http.MAX_BODY, sent=b"")  # the headers, and no body
    stalled.append(sock)
    reply = answer(sock)
    assert reply.startswith("HTTP/1.1 401") and "unknown or rotated token" in reply, reply
    assert http._JsonErrorsApp.budget.held == 0
    # a token that works is not held up by it
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


def test_a_body_must_keep_up_not_only_finish_in_time(system, settings, stalled, monkeypatch):
    """The deadline is earned by the bytes so far, slice by slice: a 5 MB body that stalls
    after its first byte is refused once its first slice is late, not after the whole
    body's time (a byte a minute kept a connection for 43 minutes)."""
    monkeypatch.setattr(http, "BODY_GRACE_SECONDS", 1)
    monkeypatch.setattr(http, "MIN_BYTES_PER_SECOND", http._SLICE)  # a slice a second: 5 MB in 81 s
    sock = stalled_upload(settings, settings.admin_token, http.MAX_BODY)
    stalled.append(sock)
    started = time.monotonic()
    reply = answer(sock)
    assert reply.startswith("HTTP/1.1 408") and "did not arrive in time" in reply, reply
    assert time.monotonic() - started < 5
