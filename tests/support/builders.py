"""Small metadata documents with unique codes, for tests that share a module's database."""
from __future__ import annotations

from dataclasses import dataclass, field

from shared import dhis2_csv

# the first line of a DHIS2 data value set CSV, every column named
CSV_HEADER = ",".join(dhis2_csv.COLUMNS) + "\n"


@dataclass
class Tree:
    """country > province > districts > villages, all codes suffixed with ``uid``."""
    uid: str
    country: str = ""
    province: str = ""
    districts: list[str] = field(default_factory=list)
    villages: dict[str, list[str]] = field(default_factory=dict)  # district -> villages

    @property
    def all_villages(self) -> list[str]:
        return [v for vs in self.villages.values() for v in vs]


def tree(uid: str, districts: int = 2, villages: int = 2, opening: str = "2000-01-01") -> tuple[Tree, list[dict]]:
    t = Tree(uid, country=f"C{uid}", province=f"P{uid}")
    units = [{"code": t.country, "name": f"Country {uid}", "nameLo": "ປະເທດ", "openingDate": opening},
             {"code": t.province, "name": f"Province {uid}", "nameLo": "ແຂວງ", "parent": t.country,
              "openingDate": opening}]
    for d in range(1, districts + 1):
        dc = f"D{d}{uid}"
        t.districts.append(dc)
        units.append({"code": dc, "name": f"District {d} {uid}", "nameLo": f"ເມືອງ {d}", "parent": t.province,
                      "openingDate": opening})
        t.villages[dc] = []
        for v in range(1, villages + 1):
            vc = f"V{d}{v}{uid}"
            t.villages[dc].append(vc)
            units.append({"code": vc, "name": f"Village {d}.{v} {uid}", "nameLo": f"ບ້ານ {d}.{v}",
                          "parent": dc, "openingDate": opening})
    return t, units


def village_data_set(uid: str, period_type: str = "Yearly", timely_days: int = 15, expiry_days: int = 0,
                     aggregation: str = "SUM", rules: bool = True) -> tuple[dict, dict]:
    """A data set for villages (level 4) with POP by sex and households; returns (codes, doc parts)."""
    codes = {"pop": f"POP{uid}", "hh": f"HH{uid}", "ds": f"DS{uid}", "rule_high": f"RH{uid}",
             "rule_medium": f"RM{uid}"}
    doc = {
        "dataElements": [
            {"code": codes["pop"], "name": f"Population {uid}", "nameLo": "ປະຊາກອນ", "valueType": "INTEGER",
             "aggregationType": aggregation, "disaggregation": ["M", "F"]},
            {"code": codes["hh"], "name": f"Households {uid}", "valueType": "INTEGER_ZERO_OR_POSITIVE",
             "aggregationType": aggregation},
        ],
        "dataSets": [{"code": codes["ds"], "name": f"Village return {uid}", "periodType": period_type,
                      "dataElements": [codes["pop"], codes["hh"]], "orgUnitLevel": 4, "orgUnits": [],
                      "timelyDays": timely_days, "expiryDays": expiry_days}],
        "validationRules": [],
    }
    if rules:
        doc["validationRules"] = [
            {"code": codes["rule_high"], "name": "Population positive", "importance": "HIGH",
             "left": f"#{{{codes['pop']}.M}} + #{{{codes['pop']}.F}}", "operator": "greater_than", "right": "0",
             "missingValueStrategy": "NEVER_SKIP", "dataSet": codes["ds"]},
            {"code": codes["rule_medium"], "name": "Households at most population", "importance": "MEDIUM",
             "left": f"#{{{codes['hh']}}}", "operator": "less_than_or_equal_to", "right": f"#{{{codes['pop']}}}",
             "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": codes["ds"]},
        ]
    return codes, doc


def village_return(codes: dict, village: str, period: str, males: int, females: int,
                   households: int | None = None) -> dict:
    values = [{"dataElement": codes["pop"], "categoryOptionCombo": "M", "value": str(males)},
              {"dataElement": codes["pop"], "categoryOptionCombo": "F", "value": str(females)}]
    if households is not None:
        values.append({"dataElement": codes["hh"], "value": str(households)})
    return {"dataSet": codes["ds"], "period": period, "orgUnit": village, "dataValues": values}
