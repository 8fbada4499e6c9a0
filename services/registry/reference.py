"""Reference metadata for Luang Namtha province (facts: ../shared/reference/strategy-brief.md).

    python -m services.registry.reference > services/registry/data/luang_namtha.json

Real: the country, the province (code 03, ຫຼວງນ້ຳທາ) and its five districts
(0301 Namtha, 0302 Sing, 0303 Long, 0304 Viengphoukha, 0305 Nalae), and the
sector departments the strategy names. Generated: the villages (real names
are not in the brief); each is marked ``generated: true`` and its name says
so. The generator is deterministic, so the committed file can be checked
against it.

Data sets, one per sector the strategy asks for first:

* VILLAGE_Y: annual village statistics (population and enrolment by sex,
  households, poor households, births, deaths), reported by every village;
* PRICES_M: monthly market prices, by each district's statistics centre;
* HEALTH_M: monthly health return, by each district health office;
* AGRI_Q: quarterly agriculture return, by each district agriculture office.
"""
from __future__ import annotations

import json
import random

OPENING = "1990-01-01"
COUNTRY = {"code": "LA", "name": "Lao PDR", "nameLo": "ສາທາລະນະລັດ ປະຊາທິປະໄຕ ປະຊາຊົນລາວ",
           "openingDate": "1975-12-02"}
PROVINCE = {"code": "03", "name": "Luang Namtha", "nameLo": "ຫຼວງນ້ຳທາ", "parent": "LA", "openingDate": OPENING}
DISTRICTS = [
    ("0301", "Namtha", "ນ້ຳທາ", 96),
    ("0302", "Sing", "ສິງ", 102),
    ("0303", "Long", "ລອງ", 88),
    ("0304", "Viengphoukha", "ວຽງພູຄາ", 62),
    ("0305", "Nalae", "ນາແລ", 64),
]
# provincial sector departments (the strategy's organisation target 2.1)
DEPARTMENTS = [
    ("03-STAT", "Provincial Statistics Centre", "ສູນສະຖິຕິແຂວງ"),
    ("03-AGR", "Provincial Agriculture and Forestry Office", "ພະແນກກະສິກຳ ແລະ ປ່າໄມ້ແຂວງ"),
    ("03-HLT", "Provincial Health Office", "ພະແນກສາທາລະນະສຸກແຂວງ"),
    ("03-EDU", "Provincial Education and Sports Office", "ພະແນກສຶກສາທິການ ແລະ ກິລາແຂວງ"),
    ("03-IC", "Provincial Industry and Commerce Office", "ພະແນກອຸດສາຫະກຳ ແລະ ການຄ້າແຂວງ"),
    ("03-LSW", "Provincial Labour and Social Welfare Office", "ພະແນກແຮງງານ ແລະ ສະຫວັດດີການສັງຄົມແຂວງ"),
]
# syllables for generated village names: (romanised, Lao)
_FIRST = [("Nam", "ນ້ຳ"), ("Don", "ດອນ"), ("Phon", "ໂພນ"), ("Na", "ນາ"), ("Houay", "ຫ້ວຍ"), ("Pak", "ປາກ"),
          ("Thong", "ທົ່ງ"), ("Nong", "ໜອງ"), ("Hat", "ຫາດ"), ("Kok", "ກອກ"), ("Phou", "ພູ"), ("Sop", "ສົບ")]
_SECOND = [("keo", "ແກ້ວ"), ("kham", "ຄຳ"), ("mai", "ໃໝ່"), ("xay", "ໄຊ"), ("sai", "ໃສ"), ("deng", "ແດງ"),
           ("luang", "ຫຼວງ"), ("ngam", "ງາມ"), ("thong", "ທອງ"), ("pheng", "ເພັງ"), ("savan", "ສະຫວັນ"),
           ("lom", "ລົມ"), ("sombat", "ສົມບັດ"), ("khoun", "ຄູນ")]


def _villages(rng: random.Random, district: str, count: int) -> list[dict]:
    out, used = [], set()
    for i in range(1, count + 1):
        while True:
            (f_en, f_lo), (s_en, s_lo) = rng.choice(_FIRST), rng.choice(_SECOND)
            if (f_en, s_en) not in used or len(used) >= len(_FIRST) * len(_SECOND):
                break
        used.add((f_en, s_en))
        out.append({"code": f"{district}{i:03d}", "name": f"Ban {f_en}{s_en} (generated)",
                    "nameLo": f"ບ້ານ{f_lo}{s_lo}", "parent": district, "openingDate": OPENING,
                    "generated": True})
    return out


DATA_ELEMENTS = [
    # village annual return
    {"code": "POP", "name": "Population", "nameLo": "ປະຊາກອນ", "valueType": "INTEGER_ZERO_OR_POSITIVE",
     "aggregationType": "AVERAGE_SUM_ORG_UNIT", "disaggregation": ["M", "F"]},
    {"code": "HH", "name": "Households", "nameLo": "ຄົວເຮືອນ", "valueType": "INTEGER_ZERO_OR_POSITIVE",
     "aggregationType": "AVERAGE_SUM_ORG_UNIT"},
    {"code": "HH_POOR", "name": "Poor households", "nameLo": "ຄົວເຮືອນທຸກຍາກ",
     "valueType": "INTEGER_ZERO_OR_POSITIVE", "aggregationType": "AVERAGE_SUM_ORG_UNIT"},
    {"code": "BIRTHS", "name": "Live births", "nameLo": "ການເກີດມີຊີວິດ", "valueType": "INTEGER_ZERO_OR_POSITIVE",
     "aggregationType": "SUM", "disaggregation": ["M", "F"]},
    {"code": "DEATHS", "name": "Deaths", "nameLo": "ການເສຍຊີວິດ", "valueType": "INTEGER_ZERO_OR_POSITIVE",
     "aggregationType": "SUM", "disaggregation": ["M", "F"]},
    {"code": "ENROL", "name": "Children enrolled in school", "nameLo": "ເດັກນ້ອຍເຂົ້າໂຮງຮຽນ",
     "valueType": "INTEGER_ZERO_OR_POSITIVE", "aggregationType": "AVERAGE_SUM_ORG_UNIT",
     "disaggregation": ["M", "F"]},
    # monthly prices (kip)
    {"code": "PRICE_RICE", "name": "Price of sticky rice (kip/kg)", "nameLo": "ລາຄາເຂົ້າໜຽວ (ກີບ/ກິໂລ)",
     "valueType": "NUMBER", "aggregationType": "AVERAGE"},
    {"code": "PRICE_PORK", "name": "Price of pork (kip/kg)", "nameLo": "ລາຄາຊີ້ນໝູ (ກີບ/ກິໂລ)",
     "valueType": "NUMBER", "aggregationType": "AVERAGE"},
    {"code": "PRICE_DIESEL", "name": "Price of diesel (kip/litre)", "nameLo": "ລາຄານ້ຳມັນກາຊວນ (ກີບ/ລິດ)",
     "valueType": "NUMBER", "aggregationType": "AVERAGE"},
    # monthly health return
    {"code": "OPD", "name": "Outpatient visits", "nameLo": "ຄົນເຈັບນອກ", "valueType": "INTEGER_ZERO_OR_POSITIVE",
     "aggregationType": "SUM", "disaggregation": ["M", "F"]},
    {"code": "DELIV_FAC", "name": "Deliveries in a health facility", "nameLo": "ການເກີດລູກຢູ່ສະຖານທີ່ບໍລິການ",
     "valueType": "INTEGER_ZERO_OR_POSITIVE", "aggregationType": "SUM"},
    {"code": "MAL_TEST", "name": "Malaria tests done", "nameLo": "ການກວດພະຍາດໄຂ້ຍຸງ",
     "valueType": "INTEGER_ZERO_OR_POSITIVE", "aggregationType": "SUM"},
    {"code": "MAL_POS", "name": "Malaria tests positive", "nameLo": "ກວດພົບພະຍາດໄຂ້ຍຸງ",
     "valueType": "INTEGER_ZERO_OR_POSITIVE", "aggregationType": "SUM"},
    {"code": "DPT3", "name": "DPT3 doses to children under 1", "nameLo": "ວັກຊີນ DPT3 ເດັກອາຍຸຕ່ຳກວ່າ 1 ປີ",
     "valueType": "INTEGER_ZERO_OR_POSITIVE", "aggregationType": "SUM"},
    # quarterly agriculture return
    {"code": "RICE_AREA", "name": "Rice area harvested (ha)", "nameLo": "ເນື້ອທີ່ເກັບກ່ຽວເຂົ້າ (ເຮັກຕາ)",
     "valueType": "NUMBER", "aggregationType": "SUM"},
    {"code": "RICE_PROD", "name": "Rice production (tonnes)", "nameLo": "ຜົນຜະລິດເຂົ້າ (ໂຕນ)",
     "valueType": "NUMBER", "aggregationType": "SUM"},
    {"code": "CATTLE", "name": "Cattle and buffalo (head)", "nameLo": "ງົວ ແລະ ຄວາຍ (ໂຕ)",
     "valueType": "INTEGER_ZERO_OR_POSITIVE", "aggregationType": "LAST"},
    {"code": "PIGS", "name": "Pigs (head)", "nameLo": "ໝູ (ໂຕ)", "valueType": "INTEGER_ZERO_OR_POSITIVE",
     "aggregationType": "LAST"},
]

DISTRICT_CODES = [d[0] for d in DISTRICTS]

DATA_SETS = [
    {"code": "VILLAGE_Y", "name": "Village annual return", "nameLo": "ບົດລາຍງານປະຈຳປີຂອງບ້ານ",
     "periodType": "Yearly", "dataElements": ["POP", "HH", "HH_POOR", "BIRTHS", "DEATHS", "ENROL"],
     "orgUnitLevel": 4, "orgUnits": [], "timelyDays": 60, "expiryDays": 0},
    {"code": "PRICES_M", "name": "Monthly market prices", "nameLo": "ລາຄາຕະຫຼາດປະຈຳເດືອນ",
     "periodType": "Monthly", "dataElements": ["PRICE_RICE", "PRICE_PORK", "PRICE_DIESEL"],
     "orgUnits": DISTRICT_CODES, "timelyDays": 10, "expiryDays": 90},
    {"code": "HEALTH_M", "name": "Monthly health return", "nameLo": "ບົດລາຍງານສາທາລະນະສຸກປະຈຳເດືອນ",
     "periodType": "Monthly", "dataElements": ["OPD", "DELIV_FAC", "MAL_TEST", "MAL_POS", "DPT3"],
     "orgUnits": DISTRICT_CODES, "timelyDays": 10, "expiryDays": 90},
    {"code": "AGRI_Q", "name": "Quarterly agriculture return", "nameLo": "ບົດລາຍງານກະສິກຳປະຈຳໄຕມາດ",
     "periodType": "Quarterly", "dataElements": ["RICE_AREA", "RICE_PROD", "CATTLE", "PIGS"],
     "orgUnits": DISTRICT_CODES, "timelyDays": 20, "expiryDays": 180},
]

VALIDATION_RULES = [
    {"code": "POP_POSITIVE", "name": "Population is more than zero", "nameLo": "ປະຊາກອນຕ້ອງຫຼາຍກວ່າສູນ",
     "importance": "HIGH", "left": "#{POP.M} + #{POP.F}", "operator": "greater_than", "right": "0",
     "missingValueStrategy": "NEVER_SKIP", "dataSet": "VILLAGE_Y"},
    {"code": "HH_LE_POP", "name": "Households do not outnumber people", "nameLo": "ຄົວເຮືອນບໍ່ເກີນປະຊາກອນ",
     "importance": "HIGH", "left": "#{HH}", "operator": "less_than_or_equal_to", "right": "#{POP}",
     "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": "VILLAGE_Y"},
    {"code": "POOR_LE_HH", "name": "Poor households are among households",
     "nameLo": "ຄົວເຮືອນທຸກຍາກບໍ່ເກີນຈຳນວນຄົວເຮືອນ", "importance": "HIGH", "left": "#{HH_POOR}",
     "operator": "less_than_or_equal_to", "right": "#{HH}",
     "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": "VILLAGE_Y"},
    {"code": "ENROL_LE_POP", "name": "Enrolment does not exceed population",
     "nameLo": "ນັກຮຽນບໍ່ເກີນປະຊາກອນ", "importance": "MEDIUM", "left": "#{ENROL}",
     "operator": "less_than_or_equal_to", "right": "#{POP}",
     "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": "VILLAGE_Y"},
    {"code": "BIRTH_RATE", "name": "Births at most 6% of population", "nameLo": "ການເກີດບໍ່ເກີນ 6% ຂອງປະຊາກອນ",
     "importance": "MEDIUM", "left": "#{BIRTHS}", "operator": "less_than_or_equal_to", "right": "#{POP} * 0.06",
     "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": "VILLAGE_Y"},
    {"code": "DEATH_RATE", "name": "Deaths at most 3% of population", "nameLo": "ການເສຍຊີວິດບໍ່ເກີນ 3% ຂອງປະຊາກອນ",
     "importance": "MEDIUM", "left": "#{DEATHS}", "operator": "less_than_or_equal_to", "right": "#{POP} * 0.03",
     "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": "VILLAGE_Y"},
    {"code": "RICE_PRICE_POSITIVE", "name": "Rice price is positive", "nameLo": "ລາຄາເຂົ້າຕ້ອງຫຼາຍກວ່າສູນ",
     "importance": "HIGH", "left": "#{PRICE_RICE}", "operator": "greater_than", "right": "0",
     "missingValueStrategy": "SKIP_IF_ALL_VALUES_MISSING", "dataSet": "PRICES_M"},
    {"code": "MAL_POS_LE_TEST", "name": "Positive malaria tests are among tests done",
     "nameLo": "ກວດພົບໄຂ້ຍຸງບໍ່ເກີນຈຳນວນການກວດ", "importance": "HIGH", "left": "#{MAL_POS}",
     "operator": "less_than_or_equal_to", "right": "#{MAL_TEST}",
     "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": "HEALTH_M"},
    {"code": "DELIV_LE_OPD_F", "name": "Facility deliveries below female outpatient visits",
     "nameLo": "ການເກີດລູກຢູ່ສະຖານທີ່ບໍລິການໜ້ອຍກວ່າຄົນເຈັບນອກຍິງ", "importance": "MEDIUM",
     "left": "#{DELIV_FAC}", "operator": "less_than_or_equal_to", "right": "#{OPD.F}",
     "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": "HEALTH_M"},
    {"code": "RICE_YIELD", "name": "Rice yield at most 8 tonnes per hectare",
     "nameLo": "ຜົນຜະລິດເຂົ້າບໍ່ເກີນ 8 ໂຕນຕໍ່ເຮັກຕາ", "importance": "MEDIUM", "left": "#{RICE_PROD}",
     "operator": "less_than_or_equal_to", "right": "#{RICE_AREA} * 8",
     "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING", "dataSet": "AGRI_Q"},
]


def _focal_points(rng: random.Random, villages: list[dict]) -> list[dict]:
    fps = [
        {"code": "FP-03-STAT", "name": "Head of the Provincial Statistics Centre", "orgUnit": "03",
         "role": "supervisor", "email": "stat.lnt@example.la", "phone": "+856 86 312 000", "language": "lo",
         # the province head reads one daily digest of late returns, not one e-mail per village
         "digest": True},
        {"code": "FP-03-HLT", "name": "Provincial health statistics officer", "orgUnit": "03-HLT",
         "role": "reporter", "email": "health.lnt@example.la", "language": "lo"},
        {"code": "FP-03-AGR", "name": "Provincial agriculture statistics officer", "orgUnit": "03-AGR",
         "role": "reporter", "email": "agri.lnt@example.la", "language": "lo"},
    ]
    for code, name, _, _ in DISTRICTS:
        fps.append({"code": f"FP-{code}-SUP", "name": f"Head of {name} district statistics centre",
                    "orgUnit": code, "role": "supervisor", "email": f"sup.{code}@example.la", "language": "lo"})
        fps.append({"code": f"FP-{code}-REP", "name": f"{name} district statistics officer",
                    "orgUnit": code, "role": "reporter", "email": f"rep.{code}@example.la",
                    "language": "en" if code == "0301" else "lo"})
    # village collectors: most villages have one; the coverage report shows those without
    for v in villages:
        if rng.random() < 0.8:
            fps.append({"code": f"FP-{v['code']}", "name": f"Village collector of {v['code']} (generated)",
                        "orgUnit": v["code"], "role": "reporter", "language": "lo"})
    return fps


def document() -> dict:
    rng = random.Random(3)  # province code 03: the same villages every time
    villages = []
    for code, _, _, count in DISTRICTS:
        villages += _villages(rng, code, count)
    units = [COUNTRY, PROVINCE]
    units += [{"code": code, "name": name, "nameLo": lo, "parent": "03", "openingDate": OPENING}
              for code, name, lo, _ in DISTRICTS]
    units += [{"code": code, "name": name, "nameLo": lo, "parent": "03", "openingDate": OPENING}
              for code, name, lo in DEPARTMENTS]
    units += villages
    return {"orgUnits": units, "dataElements": DATA_ELEMENTS, "dataSets": DATA_SETS,
            "validationRules": VALIDATION_RULES, "focalPoints": _focal_points(rng, villages)}


def path() -> str:
    import os

    return os.path.join(os.path.dirname(__file__), "data", "luang_namtha.json")


def load() -> dict:
    with open(path(), encoding="utf-8") as f:
        return json.load(f)


def dumps() -> str:
    return json.dumps(document(), ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    print(dumps(), end="")
