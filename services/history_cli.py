"""``statnet history load FILE --data-set CODE``: a big DHIS2 CSV file of past years,
sent to ``POST /api/history`` in chunks of whole lines (each all-or-nothing)."""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

CHUNK_BYTES = 4 * 1024 * 1024  # under the gateway's 5 MB


def chunks(path: str):
    """(first file line of the chunk's data, chunk text with the header repeated)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = f.readline()
        lines, size, first, line_no = [], 0, 2, 1
        for line in f:
            line_no += 1
            if size + len(line) > CHUNK_BYTES and lines:
                yield first, header + "".join(lines)
                lines, size, first = [], 0, line_no
            lines.append(line)
            size += len(line.encode("utf-8"))
        if lines:
            yield first, header + "".join(lines)


# what a chunk's refusal says about the file itself (anything else: the server, the token)
FILE_PROBLEMS = (400, 409, 413)


def post_chunk(base_url: str, token: str, data_set: str, first: int, body) -> tuple[int, dict]:
    """(HTTP status, answer) for one chunk; conflicts re-numbered to the file's lines.
    Status 0: the chunk never reached the server (``body`` is the error reading the file,
    or the server could not be reached)."""
    if isinstance(body, Exception):
        return 0, {"first_line": first, "message": f"cannot read the file: {body}", "about_file": True}
    request = urllib.request.Request(
        f"{base_url}/api/history?dataSet={data_set}", data=body.encode("utf-8"), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read() or b"{}")
        for c in answer.get("conflicts", []):
            if c["object"].startswith("line "):  # chunk line -> file line (header is chunk line 1)
                n, colon, rest = c["object"][5:].partition(":")
                c["object"] = f"line {first + int(n) - 2}{colon}{rest}"
        answer["first_line"] = first
        return exc.code, answer
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"first_line": first, "message": f"cannot reach {base_url}: {getattr(exc, 'reason', exc)}"}


def _readable(path: str):
    """The file's chunks, an error reading it (a bad byte half-way) ending them as an item:
    raised inside the pool's producer, it would leave the load waiting for ever."""
    try:
        yield from chunks(path)
    except (OSError, UnicodeDecodeError) as exc:
        yield None, exc


def load(base_url: str, token: str, path: str, data_set: str, parallel: int = 2) -> int:
    """Chunks go ``parallel`` at a time: PostgreSQL writes them on as many cores."""
    import eventlet

    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        print(f"statnet history load: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    total = {"rows": 0, "imported": 0, "updated": 0, "ignored": 0}
    started = time.monotonic()
    pool = eventlet.GreenPool(parallel)
    results = pool.imap(lambda c: post_chunk(base_url, token, data_set, *c), _readable(path))
    for status, answer in results:
        if status != 200:
            where = f"chunk from line {answer['first_line']}" if answer.get("first_line") else "the load"
            print(f"{where} refused" + (f" ({status})" if status else "") + f": {answer.get('message')}",
                  file=sys.stderr)
            for c in answer.get("conflicts", [])[:20]:
                print(f"  {c['object']}: {c['message']}", file=sys.stderr)
            # each chunk is all or nothing; the ones before it are in, and maybe the one beside it
            cure = "Fix the file" if status in FILE_PROBLEMS or answer.get("about_file") else "Once that is fixed,"
            print(f"  {total['rows']:,} rows of the chunks before it were loaded and stay (the chunk sent "
                  f"beside it may have been loaded too). {cure} load it again: values loaded "
                  "already are updated, never counted twice.", file=sys.stderr)
            return 1
        total["rows"] += answer["rows"]
        for k in ("imported", "updated", "ignored"):
            total[k] += answer["importCount"][k]
        rate = total["rows"] / max(time.monotonic() - started, 1e-9)
        print(f"{total['rows']:>12,} rows  ({rate:,.0f} values/s)", file=sys.stderr)
    finish(base_url, token)
    problem = wait_for_year_totals(base_url, token)
    if problem:
        print(f"statnet history load: {problem}", file=sys.stderr)
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
