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
SHORTEST_ROW = COLUMNS.index("value") + 1


class CsvError(ValueError):
    """The file can't be read; ``problems`` are (line, message) pairs."""

    def __init__(self, problems: list[tuple[int, str]]):
        super().__init__("; ".join(m for _, m in problems[:3]))
        self.problems = problems


def read(body: str) -> list[tuple[int, list[str]]]:
    """(line number, the ten fields) for every data line; the header is line 1."""
    try:
        reader = csv.reader(io.StringIO(body.lstrip("\ufeff")))
        header = next(reader, None)
        if not header or not any(c.strip() for c in header):
            raise CsvError([(1, "the header row is missing: the first line must name the columns "
                                + ",".join(COLUMNS))])
        names = tuple(ALIASES.get(c.strip().lower(), c.strip().lower()) for c in header)
        if not (SHORTEST_ROW <= len(names) <= len(COLUMNS)) or names != COLUMNS[:len(names)]:
            raise CsvError([(1, "the header row must be " + ",".join(COLUMNS)
                                + f" (DHIS2 column order); got {','.join(header)[:200]}")])
        rows, problems = [], []
        for row in reader:
            line = reader.line_num
            if not "".join(row).strip():  # a blank line (one join, not a generator per field:
                continue                       # a third of reading a 40,000-line history chunk)
            if not SHORTEST_ROW <= len(row) <= len(names):
                problems.append((line, f"line {line} has {len(row)} fields, not {len(names)}"
                                       + ("" if len(row) > len(names) else f" (at least {SHORTEST_ROW}: up to value)")))
                continue
            rows.append((line, row + [""] * (len(COLUMNS) - len(row))))
    except csv.Error as exc:
        raise CsvError([(reader.line_num, f"line {reader.line_num} is not valid CSV: {exc}")]) from None
    if problems:
        raise CsvError(problems)
    return rows
