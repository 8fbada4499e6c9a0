"""``statnet history load FILE --data-set CODE``: a big DHIS2 CSV file of past years,
sent to ``POST /api/history`` in chunks of whole records (each all-or-nothing), with the
load's start and each chunk's first line, which order its values (a later line wins)."""
from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import datetime as dt
import io
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CHUNK_BYTES = 4 * 1024 * 1024  # under the gateway's 5 MB
# a chunk answered 503 (the database busy, a deadlock with another load, a restart) is sent
# again after these pauses: all or nothing, a chunk sent twice is loaded once
RETRY_SECONDS = (1, 3, 9)
_LINE = re.compile(r"(?<!['\"])\bline (\d+)")  # (not in a value the message quotes)


class NotUtf8(ValueError):
    """A line of the file that is not UTF-8, named by its number."""


@dataclasses.dataclass
class Chunk:
    first: int   # file line of its first data line (the header is line 1)
    last: int    # file line of its last line
    text: str    # the header, then its lines


def chunks(path: str):
    """The file in chunks of whole CSV records, lines counted at "\\n" as the server counts
    them. A quoted field may hold line breaks (a DHIS2 comment): a chunk never ends inside
    one (it was cut at a line, and a good file refused as "a quoted field is never closed"),
    and a lone carriage return inside one is no line end (it shifted every line number after
    it). Records are found by Python's CSV reader, as the server reads them (counting quotes
    took a bare one in an unquoted comment, `5"`, for the start of a quoted field); where
    the reader gives up, the server names the fault, and records are lines from there."""
    with open(path, "rb") as f:
        head = f.read(65536)
        f.seek(0)
        if b"\r" in head and b"\n" not in head:
            # lines ended by CR alone (a spreadsheet saved for an old Mac), as the server reads
            # them: read as one line, the file went as a single chunk, refused as too large
            f = io.BytesIO(f.read().replace(b"\r", b"\n"))
        record: list[str] = []  # the lines of the record being read, each decoded once
        size = [0]              # and their bytes
        read = [0]              # the file's lines read (the header is line 1)

        def decoded(raw: bytes) -> str:
            read[0] += 1
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:  # (a UTF-16 or Latin-1 export, a stray byte)
                raise NotUtf8(f"line {read[0]:,} is not UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                              f"{exc.start + 1} of the line): save the file as UTF-8") from None

        header = decoded(f.readline().removeprefix(codecs.BOM_UTF8))

        def lines():
            for raw in f:
                size[0] += len(raw)
                record.append(decoded(raw))
                yield record[-1]

        def records():
            """(its lines, their bytes) for each record"""
            try:
                for _ in csv.reader(lines(), strict=True):
                    yield record, size[0]
                    record.clear()
                    size[0] = 0
            except csv.Error:
                pass
            if record:  # what the reader could not make a record of, and the rest: line by line
                yield record, size[0]
            for raw in f:
                yield [decoded(raw)], len(raw)

        lines_in, chunk_size, first, line_no = [], 0, 2, 1
        for texts, n in records():
            if chunk_size + n > CHUNK_BYTES and lines_in:
                yield Chunk(first, line_no, header + "".join(lines_in))
                lines_in, chunk_size, first = [], 0, line_no + 1
            lines_in.extend(texts)
            chunk_size += n
            line_no += len(texts)
        if lines_in:
            yield Chunk(first, line_no, header + "".join(lines_in))


# what a chunk's refusal says about the file itself (anything else: the server, the token)
FILE_PROBLEMS = (400, 409, 413)


def in_file_lines(text: str, first: int) -> str:
    """A server's "line N" of a chunk (its header is line 1) as the file's line."""
    return _LINE.sub(lambda m: f"line {first + int(m.group(1)) - 2}", text)


def begin(base_url: str, token: str) -> tuple[int, dict]:
    """(HTTP status, answer) of ``POST /api/history/begin``: the load's number, which orders it
    after every load begun before it (the second it started in did, and two loads begun in
    one second were ordered by their lines)."""
    request = urllib.request.Request(f"{base_url}/api/history/begin", data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"message": f"{exc.code} {exc.reason}"}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"message": f"cannot reach {base_url}: {getattr(exc, 'reason', exc)}"}


def post_chunk(base_url: str, token: str, data_set: str, chunk: Chunk, order: dict) -> tuple[int, dict]:
    """(HTTP status, answer) for one chunk of the load ``order`` (``{"load": n}``, or an older
    server's ``{"loadStarted": time}``); lines named in file lines. Status 0: the chunk
    never reached the server."""
    query = urllib.parse.urlencode({"dataSet": data_set, **order, "firstLine": chunk.first})
    request = urllib.request.Request(
        f"{base_url}/api/history?{query}", data=chunk.text.encode("utf-8"), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read() or b"{}")
        except ValueError:
            answer = {"message": f"{exc.code} {exc.reason}"}
        answer["message"] = in_file_lines(str(answer.get("message")), chunk.first)
        for c in answer.get("conflicts", []):
            c["object"] = in_file_lines(c["object"], chunk.first)
            c["message"] = in_file_lines(c["message"], chunk.first)
        return exc.code, answer
    except (urllib.error.URLError, OSError) as exc:
        # refused: never reached; cut off or timed out: it may have been loaded all the same
        reason = getattr(exc, "reason", exc)
        return 0, {"message": f"cannot reach {base_url}: {reason}",
                   "maybe_loaded": not isinstance(reason, ConnectionRefusedError)}


def send_chunk(base_url: str, token: str, data_set: str, chunk: Chunk, order: dict) -> tuple[int, dict]:
    """``post_chunk``, again after a pause while the server answers 503 (two loads of
    overlapping files, a database restarting), but not after one that timed out: that chunk
    may still be running, and would only be waited for again."""
    for pause in RETRY_SECONDS:
        status, answer = post_chunk(base_url, token, data_set, chunk, order)
        if status != 503 or "did not answer within" in str(answer.get("message")):
            return status, answer
        print(f"  lines {chunk.first:,}-{chunk.last:,}: {answer.get('message')}; sending them again in "
              f"{pause} s", file=sys.stderr)
        time.sleep(pause)
    return post_chunk(base_url, token, data_set, chunk, order)


def _ranges(chunks: list[Chunk]) -> str:
    """"lines 2-9,000 and 18,001-20,000" for chunks, neighbours joined."""
    spans: list[list[int]] = []
    for c in sorted(chunks, key=lambda c: c.first):
        if spans and spans[-1][1] + 1 == c.first:
            spans[-1][1] = c.last
        else:
            spans.append([c.first, c.last])
    return " and ".join(f"{a:,}-{b:,}" for a, b in spans)


def _refusal(chunk: Chunk, status: int, answer: dict) -> str:
    """What to do about a refused chunk: the file, the command, or the server."""
    about_lines = any(c.get("object", "").startswith("line ") for c in answer.get("conflicts", []))
    if answer.get("maybe_loaded"):
        print(f"lines {chunk.first:,}-{chunk.last:,}: no answer ({answer.get('message')}); they may have "
              "been loaded or not", file=sys.stderr)
    else:
        print(f"lines {chunk.first:,}-{chunk.last:,} refused" + (f" ({status})" if status else "")
              + f": {answer.get('message')}", file=sys.stderr)
    for c in answer.get("conflicts", [])[:20]:
        # (a message naming its line already is not led by the line again)
        where = "" if c["message"].startswith(c["object"]) else f"{c['object']}: "
        value = f" (value {c['value']!r})" if c.get("value") not in (None, "") and repr(c["value"]) not in c["message"] \
            else ""
        print(f"  {where}{c['message']}{value}", file=sys.stderr)
    if about_lines or status == 413:
        return "Fix the file and load it again"
    if status in FILE_PROBLEMS and "dataSet" in str(answer.get("message")):
        return "Check --data-set and load the file again"
    if status in FILE_PROBLEMS:
        return "Fix what the server names and load the file again"
    if status in (401, 403):  # the server answered: who asks is the matter, not whether it is up
        return "Load it with an admin's token (--token, or STATNET_ADMIN_TOKEN)"
    return "Once the server answers, load the file again"


def load(base_url: str, token: str, path: str, data_set: str, parallel: int = 2) -> int:
    """Chunks go ``parallel`` at a time: PostgreSQL writes them on as many cores. The
    first refusal stops the load: no further chunk is sent, those already sent are waited
    for, and what was loaded is named by its lines."""
    import eventlet

    try:
        if os.path.getsize(path) == 0:
            print(f"statnet history load: {path} is empty: a DHIS2 CSV file starts with its header line",
                  file=sys.stderr)
            return 2
    except OSError as exc:
        print(f"statnet history load: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    total = {"rows": 0, "imported": 0, "updated": 0, "ignored": 0, "deleted": 0}
    started = time.monotonic()
    order: dict | None = None  # the load's number, taken as its first chunk goes
    in_flight: collections.deque = collections.deque()
    loaded: list[Chunk] = []
    refused: tuple[Chunk, int, dict] | None = None
    unanswered: list[Chunk] = []  # sent, and no answer came: loaded or not
    unread: Exception | None = None
    last_sent = 1

    def settle(chunk: Chunk, thread) -> None:
        nonlocal refused
        status, answer = thread.wait()
        if status != 200:
            refused = refused or (chunk, status, answer)
            if answer.get("maybe_loaded"):
                unanswered.append(chunk)
            return
        loaded.append(chunk)
        total["rows"] += answer["rows"]
        for k in ("imported", "updated", "ignored", "deleted"):
            total[k] += answer["importCount"].get(k, 0)
        rate = total["rows"] / max(time.monotonic() - started, 1e-9)
        print(f"{total['rows']:>12,} rows  ({rate:,.0f} values/s)", file=sys.stderr)

    try:
        for chunk in chunks(path):
            while len(in_flight) >= parallel or (in_flight and refused):
                settle(*in_flight.popleft())
            if refused:
                break
            if order is None:
                # the load's number orders its values after every earlier load's, whatever the lines
                status, answer = begin(base_url, token)
                if status == 200:
                    order = {"load": answer["load"]}
                elif status in (404, 405):  # a server from before load numbers: the start's second
                    order = {"loadStarted": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
                else:  # nothing sent: said as the first chunk's refusal
                    refused = (chunk, status, {"message": f"the load could not begin: {answer.get('message')}"})
                    break
            in_flight.append((chunk, eventlet.spawn(send_chunk, base_url, token, data_set, chunk, order)))
            last_sent = chunk.last
    except (OSError, NotUtf8) as exc:  # a bad byte half-way: what was sent stays
        unread = exc
    while in_flight:
        settle(*in_flight.popleft())
    if refused or unread:
        if refused:
            cure = _refusal(*refused)
        else:
            print(f"cannot read {path}: {unread}" if isinstance(unread, NotUtf8) else
                  f"cannot read {path} after line {last_sent:,}: {unread}", file=sys.stderr)
            cure = "Fix the file and load it again"
        kept = f"lines {_ranges(loaded)} ({total['rows']:,} rows) were loaded and stay" if loaded \
            else "nothing of the file was loaded"
        if unanswered:
            kept += f", besides lines {_ranges(unanswered)}, which had no answer"
        print(f"  {kept}; each chunk is all or nothing. {cure}: values loaded already are "
              "updated, never counted twice.", file=sys.stderr)
        if loaded:
            finish(base_url, token)  # the loaded chunks' yearly totals, now
        return 1
    if not loaded:
        print(f"  {path} holds no data lines, only its header: nothing to load", file=sys.stderr)
    finish(base_url, token)
    problem = wait_for_year_totals(base_url, token)
    if problem:
        print(f"statnet history load: every line was loaded ({total['rows']:,} rows), but the yearly totals "
              f"are not confirmed: {problem}. The server finishes them when it runs; GET /api/history "
              "tells when.", file=sys.stderr)
        return 1
    print(json.dumps({**total, "seconds": round(time.monotonic() - started, 1)}))
    return 0


def finish(base_url: str, token: str) -> None:
    """No chunk follows: the yearly totals are rebuilt now, not after a pause with none.
    Only a hint: if it is not heard (a server busy or older), they start after the pause."""
    request = urllib.request.Request(f"{base_url}/api/history/done", data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60):
            pass
    except (urllib.error.URLError, OSError) as exc:
        print(f"  (the server did not take the end of the load: {exc}; the yearly totals start "
              "after a pause instead)", file=sys.stderr)


def wait_for_year_totals(base_url: str, token: str, timeout: float = 3600) -> str | None:
    """Yearly totals are rebuilt in the background after a load, then the tables'
    statistics refreshed: done means both are. Returns what went wrong, if anything."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(f"{base_url}/api/history", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return f"asking {base_url} whether the yearly totals are done: {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            return f"cannot reach {base_url}: {getattr(exc, 'reason', exc)}"
        pending = status["pendingYearTotals"]
        if pending == 0 and not status.get("refreshingStatistics"):
            return None
        if time.monotonic() > deadline:
            return f"{pending} yearly totals still pending after {timeout:.0f}s"
        print(f"  yearly totals: {pending:,} pending", file=sys.stderr)
        time.sleep(1)
