"""``statnet history load``'s parts that need no server."""
from __future__ import annotations

import csv
import io
import socket

from services import history_cli


def test_the_end_of_a_load_is_a_hint_a_server_may_miss(capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    history_cli.finish(f"http://127.0.0.1:{port}", "token")  # no exception: the load succeeded
    assert "start after a pause" in capsys.readouterr().err


def test_chunks_are_whole_lines_each_with_the_header(tmp_path, monkeypatch):
    monkeypatch.setattr(history_cli, "CHUNK_BYTES", 30)
    path = tmp_path / "h.csv"
    lines = [f"E1,2020{m:02d},V1,,,{m},,,,\n" for m in range(1, 7)]
    path.write_text("\ufeffheader\n" + "".join(lines), encoding="utf-8")
    chunks = list(history_cli.chunks(str(path)))
    assert len(chunks) > 1
    assert all(c.text.startswith("header\n") for c in chunks)  # the BOM is not part of it
    assert "".join(c.text[len("header\n"):] for c in chunks) == "".join(lines)
    # each chunk knows the file lines of its first and last data line (the header is line 1)
    assert chunks[0].first == 2 and chunks[-1].last == 7
    assert all(a.last + 1 == b.first for a, b in zip(chunks, chunks[1:]))
    assert all(c.last - c.first + 1 == c.text.count("\n") - 1 for c in chunks)


def test_a_file_of_lines_ended_by_cr_alone_is_chunked_by_those_lines(tmp_path, monkeypatch):
    """Read as one line, it went as a single chunk (refused as too large, saying nothing of
    its line ends); the server reads such lines since."""
    monkeypatch.setattr(history_cli, "CHUNK_BYTES", 30)
    path = tmp_path / "mac.csv"
    lines = [f"E1,2020{m:02d},V1,,,{m},,,,ບັນທຶກ" for m in range(1, 7)]
    path.write_bytes(("header\r" + "\r".join(lines) + "\r").encode("utf-8"))
    chunks = list(history_cli.chunks(str(path)))
    assert len(chunks) > 1 and all(c.text.startswith("header\n") for c in chunks)
    assert "".join(c.text[len("header\n"):] for c in chunks) == "".join(line + "\n" for line in lines)
    assert chunks[0].first == 2 and chunks[-1].last == 7


def test_a_chunk_never_ends_inside_a_quoted_field(tmp_path, monkeypatch):
    """A DHIS2 comment with a line break, where a chunk's size ran out, was cut in two: a
    good file refused as "a quoted field is never closed"."""
    monkeypatch.setattr(history_cli, "CHUNK_BYTES", 60)
    path = tmp_path / "h.csv"
    records = [f'E1,2020{m:02d},V1,,,{m},,,"ບັນທຶກ\r\nsecond ""line""\nthird",\n' for m in range(1, 10)]
    path.write_bytes(("header\n" + "".join(records)).encode("utf-8"))
    chunks = list(history_cli.chunks(str(path)))
    assert len(chunks) > 2
    for c in chunks:
        rows = list(csv.reader(io.StringIO(c.text), strict=True))[1:]
        assert rows and all(r[8].startswith("ບັນທຶກ") and r[8].endswith("third") for r in rows)
        assert c.last - c.first + 1 == 3 * len(rows)  # three file lines a record


def test_a_bare_quote_in_an_unquoted_field_opens_nothing(tmp_path, monkeypatch):
    """A comment `5"` (a bare quote the server's reader takes as it is) turned the quote
    count odd for the rest of the file: chunks were cut inside records, or never."""
    monkeypatch.setattr(history_cli, "CHUNK_BYTES", 60)
    path = tmp_path / "h.csv"
    records = ['E1,201001,V1,,,2,,,5",\n'] + [f'E1,2020{m:02d},V1,,,{m},,,"c""\nd\re",\n' for m in range(1, 10)]
    path.write_bytes(("header\n" + "".join(records)).encode("utf-8"))
    chunks = list(history_cli.chunks(str(path)))
    assert len(chunks) > 2
    for c in chunks:
        rows = list(csv.reader(io.StringIO(c.text), strict=True))[1:]
        assert rows and all(len(r) == 10 for r in rows)
    assert "".join(c.text[len("header\n"):] for c in chunks) == "".join(records)
    # a quote never closed: the server names it; the loader sends the rest line by line
    path.write_bytes(b'header\nE1,202001,V1,,,1,,,"open,\n' + b"E1,202002,V1,,,2,,,,\n" * 20)
    chunks = list(history_cli.chunks(str(path)))
    assert chunks[-1].last == 22 and all(a.last + 1 == b.first for a, b in zip(chunks, chunks[1:]))


def test_a_lone_carriage_return_is_no_line_end(tmp_path):
    """A comment with a lone "\r" (an old Mac's break) counted as a line: every line
    number after it was one more than the file's."""
    path = tmp_path / "h.csv"
    path.write_bytes(b'header\nE1,202001,V1,,,1,,,"a\rb",\nE1,202002,V1,,,2,,,,\n')
    [chunk] = history_cli.chunks(str(path))
    assert (chunk.first, chunk.last) == (2, 3)
    assert history_cli.in_file_lines("line 3: value 'x'", chunk.first) == "line 3: value 'x'"
    assert history_cli.in_file_lines("lines: line 2 and line 3", 101) == "lines: line 101 and line 102"
    # a value the message quotes is the file's own
    assert history_cli.in_file_lines("line 3: value 'line 7' is not", 101) == "line 102: value 'line 7' is not"


def _nowhere() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_missing_file_is_said_at_once(tmp_path, capsys):
    assert history_cli.load(_nowhere(), "token", str(tmp_path / "no-such.csv"), "DS") == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_file_unreadable_half_way_or_a_server_away_ends_the_load(tmp_path, monkeypatch, capsys):
    """(Raised inside the pool's producer, a bad byte left the load waiting for ever.)"""
    monkeypatch.setattr(history_cli, "CHUNK_BYTES", 30)
    path = tmp_path / "h.csv"
    path.write_bytes(b"header\n" + b"E1,202001,V1,,,1,,,,\n" * 2000 + b"E1,202002,V1,,,\xff\xfe,,,,\n")
    assert history_cli.load(_nowhere(), "token", str(path), "DS") == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err and "load the file again" in err and "nothing of the file was loaded" in err
    path.write_bytes(b"header\nE1,202001,V1,,,1,,,,\nE1,202002,V1,,,caf\xe9,,,,\n")
    assert history_cli.load(_nowhere(), "token", str(path), "DS") == 1
    # the line the byte is on, not the last line sent (it said "after line 1")
    assert f"cannot read {path}: line 3 is not UTF-8 (byte 0xe9 at byte 19 of the line)" in capsys.readouterr().err


def test_an_empty_file_is_no_load(tmp_path, capsys):
    path = tmp_path / "h.csv"
    path.write_bytes(b"")
    assert history_cli.load(_nowhere(), "token", str(path), "DS") == 2
    assert "is empty" in capsys.readouterr().err


def test_a_chunk_whose_answer_is_lost_may_have_been_loaded(tmp_path, capsys):
    """A server that took the chunk and closed without answering (killed after its commit)
    was reported as having refused it."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def take_and_hang_up():
        try:
            while True:
                conn, _ = server.accept()
                if b"/api/history/begin" in conn.recv(65536):  # the load's number, then the chunk
                    body = b'{"load": 1}'
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
                conn.close()
        except OSError:  # the test closed the server
            pass

    threading.Thread(target=take_and_hang_up, daemon=True).start()
    path = tmp_path / "h.csv"
    path.write_text("header\nE1,202001,V1,,,1,,,,\n", encoding="utf-8")
    try:
        assert history_cli.load(f"http://127.0.0.1:{server.getsockname()[1]}", "token", str(path), "DS") == 1
    finally:
        server.close()
    err = capsys.readouterr().err
    assert "lines 2-2: no answer" in err and "may have been loaded or not" in err, err
    assert "besides lines 2-2, which had no answer" in err and "refused" not in err, err


def test_a_refusal_of_the_token_says_to_use_an_admins_not_to_wait_for_the_server(capsys):
    """An operator's token: "Once the server answers, load the file again" (it had answered)."""
    chunk = history_cli.Chunk(2, 100, "")
    advice = history_cli._refusal(chunk, 403, {"message": "role 'operator' may not load history"})
    assert advice == "Load it with an admin's token (--token, or STATNET_ADMIN_TOKEN)"
    assert "may not load history" in capsys.readouterr().err
    assert history_cli._refusal(chunk, 503, {"message": "down"}) == "Once the server answers, load the file again"


class _Server:
    """An HTTP server on a thread answering POSTs from a script: (status, body) each."""

    def __init__(self, answers):
        import http.server
        import json
        import threading

        self.answers, self.posts = list(answers), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.posts.append(self.path)
                status, body = (200, {"load": 7}) if "/begin" in self.path or "/done" in self.path \
                    else server.answers.pop(0)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"


def test_a_chunk_answered_503_is_sent_again_but_not_one_that_timed_out(tmp_path, monkeypatch, capsys):
    """Two loads of overlapping files, or a database restarting: a 503 that says "retry"
    ended the load, with the advice to wait for a server that had answered."""
    monkeypatch.setattr(history_cli, "RETRY_SECONDS", (0, 0, 0))
    monkeypatch.setattr(history_cli, "wait_for_year_totals", lambda *a: None)
    ok = {"rows": 1, "importCount": {"imported": 1, "updated": 0, "ignored": 0, "deleted": 0}}
    busy = {"message": "temporarily unavailable (OperationalError); retry"}
    server = _Server([(503, busy), (503, busy), (200, ok)])
    path = tmp_path / "h.csv"
    path.write_text("header\nE1,202001,V1,,,1,,,,\n", encoding="utf-8")
    try:
        assert history_cli.load(server.url, "token", str(path), "DS") == 0
        assert sum("/api/history?" in p for p in server.posts) == 3
        slow = _Server([(503, {"message": "the aggregation service did not answer within 30s"})])
        assert history_cli.load(slow.url, "token", str(path), "DS") == 1
        assert sum("/api/history?" in p for p in slow.posts) == 1  # it may still be running: not again
    finally:
        server.httpd.shutdown()
    assert "sending them again" in capsys.readouterr().err


def _token_read(monkeypatch, argv: list[str]) -> str:
    """The token ``statnet`` hands the loader for these arguments."""
    from services import cli

    seen = {}
    monkeypatch.setattr(history_cli, "load", lambda base, token, path, ds: seen.update(token=token) or 0)
    assert cli.main(argv) == 0
    return seen["token"]


def test_a_token_led_by_a_dash_is_the_tokens_value(monkeypatch):
    """Tokens are URL-safe base64: one issued led by "-" was taken by argparse for an option."""
    from shared.auth import new_token

    assert _token_read(monkeypatch, ["history", "load", "--data-set", "DS", "--token", "-5SPhynX", "f.csv"]) \
        == "-5SPhynX"
    assert not any(new_token().startswith("-") for _ in range(2000))


def test_a_header_that_is_not_utf8_is_named_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "h.csv"
    path.write_bytes("dataelement,period,orgunit,catégorie\n".encode("latin-1"))
    assert history_cli.load(_nowhere(), "token", str(path), "DS") == 1
    assert f"cannot read {path}: line 1 is not UTF-8" in capsys.readouterr().err


def test_a_token_led_by_two_dashes_is_the_tokens_value_too(monkeypatch):
    assert _token_read(monkeypatch, ["history", "load", "--token", "--5SPhynX", "--data-set", "DS", "f.csv"]) \
        == "--5SPhynX"


def test_a_missing_token_before_another_option_is_argparses_error(capsys):
    import pytest

    from services import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["history", "load", "--data-set", "DS", "--token", "--url=http://elsewhere:8000", "f.csv"])
    assert exit_.value.code == 2 and "--token" in capsys.readouterr().err
