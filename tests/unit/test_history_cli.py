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
