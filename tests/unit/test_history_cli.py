"""``statnet history load``'s parts that need no server."""
from __future__ import annotations

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
    assert all(body.startswith("header\n") for _, body in chunks)  # the BOM is not part of it
    assert "".join(body[len("header\n"):] for _, body in chunks) == "".join(lines)
    # each chunk knows the file line of its first data line (the header is line 1)
    assert [first for first, _ in chunks][0] == 2
    firsts = [first for first, _ in chunks]
    sizes = [body.count("\n") - 1 for _, body in chunks]
    assert firsts == [2 + sum(sizes[:i]) for i in range(len(chunks))]


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
    assert "cannot reach" in err and "load it again" in err
    path.write_bytes(b"header\n\xff\xfe\n")
    assert history_cli.load(_nowhere(), "token", str(path), "DS") == 1
    assert "cannot read the file" in capsys.readouterr().err
