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


def load(base_url: str, token: str, path: str, data_set: str) -> int:
    total = {"rows": 0, "imported": 0, "updated": 0, "ignored": 0}
    started = time.monotonic()
    for first, body in chunks(path):
        request = urllib.request.Request(
            f"{base_url}/api/history?dataSet={data_set}", data=body.encode("utf-8"), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"})
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read() or b"{}")
            print(f"chunk from line {first} refused ({exc.code}): {answer.get('message')}", file=sys.stderr)
            for c in answer.get("conflicts", [])[:20]:
                where = c["object"]
                if where.startswith("line "):  # chunk line -> file line (header is chunk line 1)
                    n, _, rest = where[5:].partition(":")
                    where = f"line {first + int(n) - 2}:{rest}"
                print(f"  {where}: {c['message']}", file=sys.stderr)
            return 1
        total["rows"] += answer["rows"]
        for k in ("imported", "updated", "ignored"):
            total[k] += answer["importCount"][k]
        rate = total["rows"] / max(time.monotonic() - started, 1e-9)
        print(f"{total['rows']:>12,} rows  ({rate:,.0f} values/s)", file=sys.stderr)
    print(json.dumps({**total, "seconds": round(time.monotonic() - started, 1)}))
    return 0
