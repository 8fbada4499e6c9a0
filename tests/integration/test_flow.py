"""The whole flow in one process on the real broker and database:
metadata -> return -> validation -> aggregation at every ancestor; a rejected
return e-mails the supervisors over SMTP."""
from __future__ import annotations

import logging

import pytest

from shared import mailsink
from tests.support.builders import tree, village_data_set, village_return
from tests.support.client import wait_until


@pytest.fixture(scope="module")
def province(system):
    """A small province with a yearly village data set, a reporter per district, supervisors."""
    uid = "FLOW"
    t, units = tree(uid)
    codes, doc = village_data_set(uid)
    doc["orgUnits"] = units
    doc["focalPoints"] = [
        {"code": f"SUPP{uid}", "name": "ຫົວໜ້າສະຖິຕິແຂວງ", "orgUnit": t.province, "role": "supervisor",
         "email": "province.sup@example.la", "language": "lo"},
        {"code": f"SUPD{uid}", "name": "District supervisor", "orgUnit": t.districts[0], "role": "supervisor",
         "email": "district.sup@example.la", "language": "en"},
        {"code": f"SUPX{uid}", "name": "Other district's supervisor", "orgUnit": t.districts[1],
         "role": "supervisor", "email": "other.sup@example.la", "language": "en"},
    ]
    system.import_metadata(doc)
    tokens = {d: system.create_user(f"rep-{d}", "reporter", d) for d in t.districts}
    return t, codes, tokens


def test_health(system):
    r = system.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_village_return_counts_at_village_district_province_and_country(system, province):
    t, codes, tokens = province
    district = t.districts[0]
    village = t.villages[district][0]
    r = system.submit(village_return(codes, village, "2024", males=120, females=131, households=40),
                      token=tokens[district])
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "RECEIVED"
    sub = system.wait_status(r.json()["id"])
    assert sub["status"] == "AGGREGATED", sub
    assert sub["importCount"] == {"imported": 3, "updated": 0, "ignored": 0, "deleted": 0}

    totals = system.analytics(f"{codes['pop']};{codes['pop']}.F", f"{village};{district};{t.province};{t.country}",
                              "2024")
    for ou in (village, district, t.province, t.country):
        assert totals[(codes["pop"], ou, "2024")] == 251
        assert totals[(f"{codes['pop']}.F", ou, "2024")] == 131
    # the other district has no data: no row, not a zero
    assert system.analytics(codes["pop"], t.districts[1], "2024") == {}


def test_rejected_return_is_not_counted_and_emails_supervisors_in_their_language(system, province, mailbox):
    t, codes, tokens = province
    district = t.districts[0]
    village = t.villages[district][1]
    r = system.submit(village_return(codes, village, "2023", males=0, females=0), token=tokens[district])
    assert r.status_code == 202, r.text
    sub = system.wait_status(r.json()["id"])
    assert sub["status"] == "REJECTED"
    assert [v["rule"] for v in sub["violations"]] == [codes["rule_high"]]
    assert sub["violations"][0]["importance"] == "HIGH"
    assert sub["violations"][0]["left"] == 0 and sub["violations"][0]["right"] == 0
    assert system.analytics(codes["pop"], village, "2023") == {}

    # supervisors of the village's district and of the province; not the other district's
    def sent():
        listed = system.get("/api/notifications?type=INVALID_RETURN").json()["notifications"]
        mine = [n for n in listed if n["orgUnit"] == village and n["period"] == "2023"]
        return mine if mine and all(n["status"] == "SENT" for n in mine) else None

    notes = wait_until(sent, timeout=30, message="alerts sent")
    assert sorted(n["recipient"] for n in notes) == [f"SUPD{t.uid}", f"SUPP{t.uid}"]
    mails = wait_until(lambda: [m for m in mailsink.read(mailbox) if village in m.get_content()] or None,
                       timeout=10, message="mail delivered")
    by_to = {m["To"]: m for m in mails}
    assert set(by_to) == {"province.sup@example.la", "district.sup@example.la"}
    assert by_to["province.sup@example.la"]["Subject"].startswith("[statnet] ລາຍງານບໍ່ຖືກຕ້ອງ")
    assert "ຖືກປະຕິເສດ" in by_to["province.sup@example.la"].get_content()
    assert by_to["district.sup@example.la"]["Subject"].startswith("[statnet] Invalid return")


def test_no_token_or_unknown_token_is_401(system):
    assert system.get("/api/analytics?dx=X&ou=Y&pe=2024", token="nope").status_code == 401
    anonymous = system.as_user("")
    anonymous.token = None
    r = anonymous.get("/api/orgUnits/X")
    assert r.status_code == 401
    assert "bearer" in r.json()["message"].lower()
    assert r.headers["WWW-Authenticate"].startswith("Bearer")  # RFC 9110: a 401 says how


def test_outside_scope_is_403_and_nothing_is_stored(system, province, caplog):
    t, codes, tokens = province
    other_village = t.villages[t.districts[1]][0]
    caplog.set_level(logging.INFO, logger="services.gateway.http")
    r = system.submit(village_return(codes, other_village, "2024", males=5, females=5),
                      token=tokens[t.districts[0]])
    assert r.status_code == 403, r.text
    assert other_village in r.json()["message"]
    # and the attempt is on record: who, with which role and scope, what
    audit = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("access refused (403)")]
    assert any(f"(reporter at {t.districts[0]}) from 127.0.0.1 on POST /api/dataValueSets: " in m
               and other_village in m for m in audit), audit
    # a reporter may not import metadata
    r = system.post("/api/metadata", json={}, token=tokens[t.districts[0]])
    assert r.status_code == 403
    assert "import metadata" in r.json()["message"]
    assert system.analytics(codes["pop"], other_village, "2024") == {}


def test_bad_return_is_400_listing_every_problem(system, province):
    t, codes, tokens = province
    district = t.districts[0]
    body = {"dataSet": codes["ds"], "period": "2024-13", "orgUnit": t.villages[district][0],
            "dataValues": [{"dataElement": codes["pop"], "categoryOptionCombo": "M", "value": "many"},
                           {"dataElement": "NOPE", "value": "1"}]}
    r = system.submit(body, token=tokens[district])
    assert r.status_code == 400
    conflicts = r.json()["conflicts"]
    objects = {c["object"] for c in conflicts}
    assert {"period", "dataValues[0].value", "dataValues[1].dataElement"} <= objects
    assert any(c["value"] == "many" for c in conflicts)
    assert any(c["value"] == "NOPE" for c in conflicts)
