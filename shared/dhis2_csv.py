"""DHIS2's data value CSV, read once for every path that takes it.

DHIS2 reads the file by column position; the header row must be there and is
checked here so a file with columns in another order is refused, not
misread. Both spellings DHIS2 has used are accepted: today's
(``categoryoptioncombo``, ``attributeoptioncombo``, ``lastupdated``, with
``followup``) and the older one in its documentation (``catoptcombo``,
``attroptcombo``, ``lastupd``, no ``followup``).
"""
from __future__ import annotations

import csv
import io

COLUMNS = ("dataelement", "period", "orgunit", "categoryoptioncombo", "attributeoptioncombo", "value",
           "storedby", "lastupdated", "comment", "followup")
ALIASES = {"catoptcombo": "categoryoptioncombo", "attroptcombo": "attributeoptioncombo", "lastupd": "lastupdated",
           "lastupdate": "lastupdated"}
# a header, and a data line, may stop after the value: DHIS2 reads the optional columns
# left out (storedby, lastupdated, comment, followup) as empty
VALUE = COLUMNS.index("value")
SHORTEST_ROW = VALUE + 1
DELETED = "deleted"  # DHIS2's eleventh column since 2.36: true marks a deletion


class CsvError(ValueError):
    """The file can't be read; ``problems`` are (line, message) pairs."""

    def __init__(self, problems: list[tuple[int, str]]):
        super().__init__("; ".join(m for _, m in problems[:3]))
        self.problems = problems


def read(body: str) -> list[tuple[int, list[str]]]:
    """(line number, the ten fields) for every data line; the header is line 1.

    A ``deleted`` column after ``followup`` (DHIS2 2.36 on) is read too: a line marked
    deleted is a deletion, its value read as empty. Empty fields past the header's last
    column (a spreadsheet's trailing comma) are no fields. Quotes are read strictly: a
    quoted field never closed would otherwise swallow every line after it into itself."""
    body = body.lstrip("\ufeff")
    if "\n" not in body:
        # lines ended by CR alone (a spreadsheet saved for an old Mac): DHIS2's reader takes
        # them, and Python's csv asked for "universal-newline mode"
        body = body.replace("\r", "\n")
    reader = csv.reader(io.StringIO(body), strict=True)
    start = 1
    try:
        header = next(reader, None)
        if not header or not any(c.strip() for c in header):
            raise CsvError([(1, "the header row is missing: the first line must name the columns "
                                + ",".join(COLUMNS))])
        names = tuple(ALIASES.get(c.strip().lower(), c.strip().lower()) for c in header)
        while len(names) > SHORTEST_ROW and names[-1] == "":  # a spreadsheet's trailing commas
            names = names[:-1]
        known = COLUMNS + (DELETED,)
        if not (SHORTEST_ROW <= len(names) <= len(known)) or names != known[:len(names)]:
            raise CsvError([(1, "the header row must be " + ",".join(COLUMNS)
                                + f" (DHIS2 column order, optionally ,{DELETED}); got {','.join(header)[:200]}")])
        rows, problems = [], []
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            line = reader.line_num
            if not "".join(row).strip():  # a blank line (one join, not a generator per field:
                continue                       # a third of reading a 40,000-line history chunk)
            while len(row) > len(names) and row[-1] == "":
                row.pop()
            if not SHORTEST_ROW <= len(row) <= len(names):
                problems.append((line, f"line {line} has {len(row)} fields, not {len(names)}"
                                       + ("" if len(row) > len(names) else f" (at least {SHORTEST_ROW}: up to value)")))
                continue
            row += [""] * (len(known) - len(row))
            deleted = row.pop().strip().lower()
            if deleted in ("true", "1"):
                row[VALUE] = ""
            elif deleted not in ("", "false", "0"):
                problems.append((line, f"line {line}: deleted {deleted!r} is not true or false"))
                continue
            rows.append((line, row))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise CsvError([(start, f"line {start}: a quoted field is never closed (a \" missing?): "
                                    "every line after it would be read as part of it")]) from None
        if "field larger than field limit" in str(exc):
            raise CsvError([(start, f"line {start}: a field is longer than {csv.field_size_limit():,} "
                                    "characters (a value or comment is at most 50,000; a quote left "
                                    "open runs on into the lines after it)")]) from None
        raise CsvError([(reader.line_num, f"line {reader.line_num} is not valid CSV: {exc}")]) from None
    if problems:
        raise CsvError(problems)
    return rows
