"""Analytics as CSV and as SDMX-CSV 1.0 (CONTRACT 5).

SDMX-CSV 1.0: one row per observation, first column ``DATAFLOW`` holding the
dataflow reference ``STATNET:<dataSet>(1.0)``, then the dimensions
``DATA_ELEMENT``, ``DISAGGREGATION`` (``_T`` for the total over combos, the SDMX
code for "total"), ``REF_AREA`` (org unit code), ``TIME_PERIOD`` (SDMX format:
2026, 2026-Q3, 2026-09), then ``OBS_VALUE``. ``labels=both`` gives
``code: name`` headers and values as SDMX-CSV allows, in Lao with ``locale=lo``.
"""
from __future__ import annotations

import csv
import io

from services.aggregation.analytics import plain
from shared.api import error
from shared.periods import Period
from shared.replica import Metadata

TOTAL = "_T"
SDMX_CSV = "application/vnd.sdmx.data+csv; version=1.0.0; charset=utf-8"
CSV = "text/csv; charset=utf-8"



def _name(obj, lang: str) -> str:
    return (obj.name_lo or obj.name) if lang == "lo" else obj.name


def analytics_csv(rows: list[dict], md: Metadata, filters: frozenset[str] = frozenset()) -> str:
    """DHIS2's analytics CSV; a dimension asked as a filter has no columns, as in its JSON."""
    columns = ["dx", "ou", "pe", "value", "dxname", "dxnamelo", "ouname", "ounamelo"]
    kept = [c for c in columns if c[:2] not in filters]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(kept)
    for r in rows:
        de_code, _, combo = r["dx"].partition(".")
        de = md.data_elements[de_code]
        unit = md.org_units[r["ou"]] if r["ou"] is not None else None  # (None: a filter of several)
        suffix = f" {combo}" if combo else ""
        cells = dict(zip(columns, [r["dx"], r["ou"], r["pe"], plain(r["value"]), de.name + suffix,
                                   (de.name_lo + suffix) if de.name_lo else "",
                                   unit and unit.name, unit and (unit.name_lo or "")]))
        writer.writerow([cells[c] for c in kept])
    return out.getvalue()


def dataflows_for(params: dict, elements: list[str], md: Metadata) -> dict[tuple[str, str | None], str]:
    """Each asked element's dataflow (data set), by (element, None) and, where an element is
    in data sets of several period types, by (element, period type): ``ds`` for all of them
    if given; else the data set holding most of the asked elements where it holds the
    element, otherwise the first by code that does. An export may mix data sets
    (``dx=OPD;PRICE_RICE``): each observation names its own dataflow, as SDMX-CSV's first
    column is for."""
    asked = params.get("ds")
    if asked:
        ds = md.data_sets.get(asked)
        if ds is None:
            raise error(400, f"ds: unknown data set {asked!r}")
        missing = [e for e in elements if e not in ds.data_elements]
        if missing:
            raise error(400, f"ds: data set {asked!r} does not contain {', '.join(missing)}")
        return {(e, None): ds.code for e in elements}  # named: every observation is that one's
    ranked = sorted(md.data_sets.values(),
                    key=lambda d: (-sum(e in d.data_elements for e in elements), d.code))
    if not ranked or not any(e in ranked[0].data_elements for e in elements):
        raise error(400, "no data set contains the asked data elements; name one with ds=")
    # (an element no data set holds any more keeps the values it had: they go with the
    # data set holding most of the others)
    flows = {(e, None): next((d for d in ranked if e in d.data_elements), ranked[0]).code for e in elements}
    # an element in data sets of several period types (monthly and yearly): an observation
    # at a period type one of them collects at is that one's
    for d in ranked:
        for e in elements:
            if e in d.data_elements:
                flows.setdefault((e, d.period_type), d.code)
    return flows


def sdmx_csv(rows: list[dict], md: Metadata, dataflows: dict, labels: str = "id", lang: str = "en") -> str:
    """``dataflows``: as ``dataflows_for`` gives them."""
    if labels not in ("id", "both"):
        raise error(400, f"labels: {labels!r} must be id or both")
    both = labels == "both"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["DATAFLOW", "DATA_ELEMENT", "DISAGGREGATION", "REF_AREA", "TIME_PERIOD", "OBS_VALUE"]
    if both:  # (SDMX-CSV 1.0: the measure's column is always plainly OBS_VALUE)
        header = ["DATAFLOW", "DATA_ELEMENT: Data element", "DISAGGREGATION: Disaggregation",
                  "REF_AREA: Reference area", "TIME_PERIOD: Time period", "OBS_VALUE"]
    writer.writerow(header)
    flows = {}
    for key, ds_code in dataflows.items():
        flows[key] = f"STATNET:{ds_code}(1.0)"
        if both:
            flows[key] += f": {_name(md.data_sets[ds_code], lang)}"
    for r in rows:
        de_code, _, combo = r["dx"].partition(".")
        combo = combo or TOTAL
        asked = Period.parse_output(r["pe"])
        flow = flows.get((de_code, asked.type)) or flows[(de_code, None)]
        period = asked.sdmx()
        de, unit = md.data_elements[de_code], md.org_units[r["ou"]]
        if both:
            cells = [f"{de_code}: {_name(de, lang)}", f"{combo}: {'Total' if combo == TOTAL else combo}",
                     f"{r['ou']}: {_name(unit, lang)}", period]  # time is not coded: no label
        else:
            cells = [de_code, combo, r["ou"], period]
        writer.writerow([flow, *cells, plain(r["value"])])
    return out.getvalue()
