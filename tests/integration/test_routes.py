"""Every route answers under the one base URL, every time.

nameko's web server is one per service container: two services with @http
in one process would both bind the address and the kernel would split
requests between them (about half would 404). statnet has one HTTP owner,
the gateway; this test calls each route many times in a row and must never
see a stray 404.
"""
from __future__ import annotations

import json

import pytest

from tests.support.builders import CSV_HEADER, tree, village_data_set, village_return

CALLS = 40


@pytest.fixture(scope="module")
def world(system):
    t, units = tree("RT", districts=1, villages=1)
    codes, doc = village_data_set("RT")
    doc["orgUnits"] = units
    doc["focalPoints"] = [{"code": "FPRT", "name": "Supervisor", "orgUnit": t.province, "role": "supervisor",
                           "email": "s@example.la"}]
    system.import_metadata(doc)
    village = t.all_villages[0]
    r = system.submit(village_return(codes, village, "2024", 10, 11))
    assert r.status_code == 202, r.text
    system.wait_status(r.json()["id"])
    return t, codes, village, r.json()["id"]


def routes(t, codes, village, return_id):
    """(method, path, json body, expected status) for every route of the contract."""
    return [
        ("GET", "/health", None, 200),
        ("GET", "/metrics", None, 200),
        ("POST", "/api/users", {"username": "rt-user", "role": "operator", "orgUnit": None}, 201),
        ("POST", "/api/metadata", {"orgUnits": [{"code": t.province, "name": "Province RT",
                                                 "parent": t.country, "openingDate": "2000-01-01"}]}, 200),
        ("GET", "/api/metadata?dataSets=true", None, 200),
        ("GET", f"/api/orgUnits/{village}", None, 200),
        ("GET", f"/api/orgUnits/{t.province}/coverage", None, 200),
        ("GET", f"/api/focalPoints?orgUnit={t.province}", None, 200),
        ("PUT", "/api/focalPoints/FPRT", {"name": "Supervisor", "orgUnit": t.province, "role": "supervisor",
                                          "email": "s@example.la"}, 200),
        ("DELETE", "/api/focalPoints/FPRT", None, 200),   # retired (the PUT above makes it active again)
        ("POST", "/api/dataValueSets", village_return(codes, village, "2024", 10, 11), 202),
        ("GET", f"/api/dataValueSets?dataSet={codes['ds']}&period=2024&orgUnit={village}", None, 200),
        ("GET", f"/api/dataValueSets.json?dataSet={codes['ds']}&period=2024&orgUnit={village}", None, 200),
        ("GET", f"/api/dataValueSets.csv?dataSet={codes['ds']}&period=2024&orgUnit={village}", None, 200),
        ("GET", f"/api/submissions/{return_id}", None, 200),
        ("GET", f"/api/validationResults?ou={t.province}&pe=2024", None, 200),
        ("POST", f"/api/history?dataSet={codes['ds']}", None, 400),  # an empty body is no CSV: answered, not 404
        ("GET", "/api/history", None, 200),
        ("POST", "/api/history/done", None, 200),
        ("GET", f"/api/analytics?dx={codes['pop']}&ou={t.province}&pe=2024", None, 200),
        ("GET", f"/api/analytics.csv?dx={codes['pop']}&ou={t.province}&pe=2024", None, 200),
        ("GET", f"/api/analytics.sdmx.csv?dx={codes['pop']}&ou={t.province}&pe=2024", None, 200),
        ("GET", f"/api/completeness?ds={codes['ds']}&ou={t.province}&pe=2024", None, 200),
        ("POST", "/api/deadlines/check?asOf=2024-06-01", None, 200),
        ("GET", "/api/notifications?recipient=FPRT", None, 200),
        ("POST", "/api/notifications/retry?channel=webhook", None, 200),
    ]


def test_every_route_answers_every_time(system, world):
    t, codes, village, return_id = world
    seen = {}
    for method, path, body, expected in routes(t, codes, village, return_id):
        statuses = [system.request(method, path, json=body).status_code for _ in range(CALLS)]
        seen[(method, path)] = statuses
        assert statuses == [expected] * CALLS, f"{method} {path}: {sorted(set(statuses))}"


def test_unknown_route_is_a_json_404(system):
    r = system.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json()["status"] == "ERROR"


def test_an_api_call_without_a_token_is_a_401_even_to_no_route(system):
    """Every /api/ call without a token is a 401 (CONTRACT 2): a path that names no route
    answered 404, telling a caller who had not said who they were what the API holds."""
    for method, path in (("GET", "/api/nothing-here"), ("POST", "/api/orgUnits/X/nothing"), ("GET", "/api/users")):
        r = system.request(method, path, headers={"Authorization": ""})
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["httpStatusCode"] == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert system.request("GET", "/nothing-here", headers={"Authorization": ""}).status_code == 404  # not the API


def test_an_unknown_token_is_a_401_to_no_route_too_and_a_known_one_learns_the_routes(system):
    """An unknown token to a path or method of no route got the router's 404 or 405 (with
    Allow): the API's routes could be mapped without a valid token."""
    for method, path in (("GET", "/api/nothing-here"), ("DELETE", "/api/users"), ("GET", "/api/users")):
        r = system.request(method, path, headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert "Allow" not in r.headers and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = system.request("GET", "/api/nothing-here")  # the admin's token
    assert r.status_code == 404 and r.json() == {"status": "ERROR", "httpStatusCode": 404,
                                                 "message": "Not Found: GET /api/nothing-here"}, r.text
    r = system.request("DELETE", "/api/users")
    assert r.status_code == 405 and r.headers["Allow"] == "POST", (r.status_code, r.headers, r.text)
    assert "Method Not Allowed: DELETE /api/users" in r.json()["message"]
    # the inner route is no door of its own
    assert system.request("GET", "/.unmatched").status_code == 404


@pytest.mark.parametrize("path,method", [("/api/users", "POST"), ("/api/metadata", "POST"),
                                         ("/api/focalPoints/FPRT", "PUT")])
@pytest.mark.parametrize("body", [[1, 2], "text", 5, None])
def test_a_json_document_that_is_not_an_object_is_a_400_naming_the_body(system, world, path, method, body):
    r = system.request(method, path, data=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["conflicts"][0]["object"] == "body"
    assert "must be a JSON object" in r.json()["message"]


@pytest.mark.parametrize("path,method", [("/api/users", "POST"), ("/api/metadata", "POST"),
                                         ("/api/focalPoints/FPRT", "PUT"), ("/api/dataValueSets", "POST")])
def test_a_field_named_twice_is_a_400_naming_it_not_the_last_one_silently(system, world, settings, path, method):
    before = _stored_rows(settings)
    r = system.request(method, path, data=b'{"name": "a", "role": "reporter", "name": "b"}',
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["conflicts"][0]["object"] == "body", r.text
    assert "field 'name' appears twice" in r.json()["conflicts"][0]["message"], r.text
    assert _stored_rows(settings) == before


def _stored_rows(settings) -> tuple:
    import sqlalchemy as sa

    from shared.db import engine_for

    with engine_for(settings.database_url).connect() as conn:
        return tuple(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
                     for table in ("registry.user_account", "registry.focal_point", "submission.return"))


def test_a_nul_character_anywhere_is_a_400_never_a_500(system, world):
    """PostgreSQL stores no NUL in text: the request is refused before anything is asked."""
    t, codes, village, _ = world
    for method, path, kwargs in [
            ("GET", "/api/orgUnits/a%00b", {}),
            ("GET", "/api/submissions/%00", {}),
            ("GET", "/api/focalPoints?orgUnit=a%00b", {}),
            ("POST", "/api/dataValueSets", {"json": village_return(codes, village, "2024", 1, 2),
                                            "headers": {"Idempotency-Key": "k\x00"}}),
            ("POST", "/api/dataValueSets", {"data": f"{codes['pop']},2024,{village},M,,1,me\x00,,,\n".encode(),
                                            "headers": {"Content-Type": "text/csv"}}),
            ("POST", "/api/metadata", {"json": {"orgUnits": [{"code": "RTNUL", "name": "a\x00b", "parent": t.country,
                                                              "openingDate": "2000-01-01"}]}}),
            ("POST", "/api/dataValueSets", {"json": {**village_return(codes, village, "2024", 1, 2),
                                                     "dataValues": [{"dataElement": codes["pop"],
                                                                     "categoryOptionCombo": "M", "value": "1",
                                                                     "comment": "x\x00"}]}})]:
        try:
            r = system.request(method, path, **kwargs)
        except ValueError:  # the HTTP client itself refuses a NUL in a header: nothing to test
            continue
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert "NUL" in r.text, r.text
    assert system.get("/api/orgUnits/RTNUL").status_code == 404  # nothing stored
    # in a file, the line it is on (a probe's CSV was told "body holds a NUL" and no more)
    for first, ends in (("\n", "\n"), ("\r\n", "\r\n"), ("\r", "\r"), ("\n", "\r")):  # (mixed too)
        body = CSV_HEADER.rstrip("\n") + first + ends.join([f"{codes['pop']},2024,{village},M,,1,,,,",
                                                            f"{codes['pop']},2024,{village},F,,a\x00b,,,,", ""])
        r = system.post("/api/dataValueSets", data=body.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 400 and "(line 3)" in r.json()["message"], r.text
        assert r.json()["conflicts"][0]["value"] == f"{codes['pop']},2024,{village},F,,a\\u0000b,,,,", r.text


def test_a_trailing_slash_names_the_same_route(system, world):
    """As DHIS2 answers /api/analytics/ (Spring matches a trailing slash): it was a 404."""
    t, codes, village, return_id = world
    for method, path, body, expected in routes(t, codes, village, return_id):
        bare, _, query = path.partition("?")
        slashed = bare + "/" + ("?" + query if query else "")
        r = system.request(method, slashed, json=body)
        assert r.status_code == expected, (method, slashed, r.status_code, r.text[:300])


def test_doubled_slashes_name_no_route(system, world):
    """werkzeug redirected them (308) and the redirect lost its Location on the way to JSON."""
    t, *_ = world
    for path in ("/api/orgUnits//coverage", "/api//history", f"/api/orgUnits/{t.province}//coverage"):
        r = system.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)


def test_a_lone_surrogate_escape_is_a_400_naming_the_field_never_a_500(system, world):
    """JSON may escape half of a UTF-16 pair ("\\ud800"), which is no character: no database
    text and no UTF-8 answer can hold it. Every JSON route names the field; none echoes it."""
    t, codes, village, _ = world
    base = json.dumps(village_return(codes, village, "2024", 1, 2))
    for method, path, body, where in [
            ("POST", "/api/dataValueSets", base.replace('"value": "1"', '"value": "1\\udfff"', 1),
             "dataValues[0].value"),
            ("POST", "/api/dataValueSets?dryRun=true",
             base.replace('"value": "1"', '"value": "1", "comment": "ok \\ud800 bad"', 1), "dataValues[0].comment"),
            ("POST", "/api/dataValueSets", base.replace(f'"{codes["ds"]}"', f'"{codes["ds"]}\\ud800"', 1),
             "dataSet"),
            ("POST", "/api/metadata", '{"orgUnits": [{"code": "RTSUR", "name": "x", "nameLo": "\\udc80",'
                                      f' "parent": "{t.country}", "openingDate": "2000-01-01"}}]}}',
             "body.orgUnits[0].nameLo"),
            ("PUT", "/api/focalPoints/FPRT", '{"name": "\\ud800"}', "body.name"),
            ("POST", "/api/users", '{"username": "a\\ud800", "role": "operator", "orgUnit": null}', "body.username")]:
        r = system.request(method, path, data=body.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert [c["object"] for c in r.json()["conflicts"]] == [where], r.text
        assert "surrogate" in r.json()["conflicts"][0]["message"]
    assert system.get("/api/orgUnits/RTSUR").status_code == 404  # nothing stored


def test_numbers_past_what_python_reads_and_the_calendars_last_year_are_400s_never_500s(system, world):
    """A fuzz found each a 500: Python converts at most 4,300 digits to an int (ValueError),
    and a period of 9999 has no next period nor a day after its end (OverflowError)."""
    t, codes, village, _ = world
    huge = "9" * 5000
    ret = village_return(codes, village, "2024", 1, 2)
    for body in ({**ret, "dataValues": [{**ret["dataValues"][0], "value": huge}]},
                 {**ret, "dataValues": [{**ret["dataValues"][0], "value": huge + ".0"}]}):
        for path in ("/api/dataValueSets", "/api/dataValueSets?dryRun=true"):
            r = system.post(path, json=body)
            assert r.status_code == 400 and "too large" in r.text, (path, r.status_code, r.text[:300])
    # a bare JSON number that long: the field holding it says so, not "body is not valid JSON"
    raw = json.dumps(ret).replace('"value": "1"', f'"value": {huge}', 1)
    r = system.request("POST", "/api/dataValueSets", data=raw.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "dataValues[0].value" in r.text and "too large" in r.text, r.text[:300]
    r = system.request("POST", "/api/metadata", headers={"Content-Type": "application/json"},
                       data=f'{{"dataSets": [{{"code": "RTX", "name": "x", "periodType": "Monthly", '
                            f'"timelyDays": {huge}}}]}}'.encode())
    assert r.status_code in (400, 409) and "timelyDays" in r.text and "digits" not in r.text, r.text[:300]
    csv = ("dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,"
           f"comment,followup\n{codes['pop']},2023,{village},M,,5,,,,\n")
    for method, path, body in [
            ("GET", f"/api/notifications?page={huge}", None), ("GET", f"/api/notifications?pageSize={huge}", None),
            ("GET", f"/api/analytics?dx={codes['pop']}&ou=LEVEL-{huge}&pe=2024", None),
            ("POST", f"/api/history?dataSet={codes['ds']}&firstLine={huge}", csv),
            ("GET", f"/api/completeness?ds={codes['ds']}&ou={t.province}&pe=9999", None),
            ("GET", f"/api/validationResults?ou={t.province}&pe=9999Q4", None),
            ("GET", f"/api/analytics?dx={codes['pop']}&ou={t.province}&pe=999912", None)]:
        r = system.request(method, path, data=body and body.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 400, (path[:90], r.status_code, r.text[:300])
        assert "Exceeds the limit" not in r.text and "out of range" not in r.text, r.text[:300]
    # a huge limit is the most there is, as before
    r = system.get(f"/api/validationResults?ou={t.province}&limit={huge}")
    assert r.status_code == 200, r.text[:300]
    # "changed since the start of time", in any zone: everything, not an overflow
    for since in ("0001-01-01", "0001-01-01T00:00:00%2B14:00", "9999-12-31T23:59:59-12:00"):
        r = system.get(f"/api/dataValueSets?dataSet={codes['ds']}&orgUnit={t.province}&children=true"
                       f"&lastUpdated={since}")
        assert r.status_code == 200, (since, r.text[:300])


def test_deep_json_odd_charsets_and_broken_gzip_are_400s_and_store_nothing(system, world, settings):
    """Each was a 500, or (a gzip body cut off in transfer) a 202 that stored half the file."""
    import gzip

    t, codes, village, _ = world
    deep = "[" * 2000 + '"ok"' + "]" * 2000  # (as text: Python's own json can't write it)
    body = json.dumps(village_return(codes, village, "2024", 1, 2)).replace('"value": "1"',
                                                                            f'"value": "1", "comment": {deep}', 1)
    csv_body = (",".join(["dataelement", "period", "orgunit", "categoryoptioncombo", "attributeoptioncombo",
                          "value", "storedby", "lastupdated", "comment", "followup"]) + "\n"
                + "".join(f"{codes['pop']},2024,{village},{c},,{n},,,note {n},\n" for n, c in ((1, "M"), (2, "F"))))
    packed = gzip.compress(csv_body.encode())
    for path, data, headers, status in [
            ("/api/dataValueSets", body.encode(), {"Content-Type": "application/json"}, 400),
            ("/api/metadata", f'{{"orgUnits": {deep}}}'.encode(), {"Content-Type": "application/json"}, 400),
            ("/api/dataValueSets", csv_body.encode(), {"Content-Type": "text/csv; charset=rot13"}, 415),
            ("/api/dataValueSets", csv_body.encode(), {"Content-Type": "text/csv; charset=base64"}, 415),
            ("/api/dataValueSets", csv_body.encode(), {"Content-Type": "text/csv; charset=undefined"}, 415),
            ("/api/dataValueSets", csv_body.replace("note 1", "+2AA-").encode(),
             {"Content-Type": "text/csv; charset=utf-7"}, 415),       # no character set of the web's
            ("/api/dataValueSets", csv_body.replace("note 1", "\\ud800").encode(),
             {"Content-Type": "text/csv; charset=unicode_escape"}, 415),
            ("/api/dataValueSets", csv_body.encode("utf-16-le"), {"Content-Type": "text/csv"}, 400),  # no BOM
            ("/api/dataValueSets", packed[:len(packed) * 2 // 3], {"Content-Type": "text/csv",
                                                                     "Content-Encoding": "gzip"}, 400),
            ("/api/dataValueSets", packed + b"garbage", {"Content-Type": "text/csv", "Content-Encoding": "gzip"}, 400)]:
        r = system.request("POST", f"{path}?dataSet={codes['ds']}", data=data, headers=headers)
        assert r.status_code == status and r.json()["status"] == "ERROR", (headers, r.status_code, r.text[:300])
    # two gzip members, as `cat a.gz b.gz` makes them, are one body
    half = csv_body.index(f"{codes['pop']},2024,{village},F")
    two = gzip.compress(csv_body[:half].encode()) + gzip.compress(csv_body[half:].encode())
    r = system.request("POST", f"/api/dataValueSets?dataSet={codes['ds']}&dryRun=true", data=two,
                       headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["importCount"]["imported"] + r.json()["importCount"]["updated"] == 2, r.text


def test_a_role_that_may_not_write_is_a_403_before_its_body_is_read(system, world):
    """A supervisor posting metadata, users, focal points, returns or history learns that
    its role may not, whatever the body: it was told the document's faults (400) or its
    size (413) first, and only a well-formed document reached the role check."""
    t, codes, village, _ = world
    supervisor = system.as_user(system.create_user("rt-role-sup", "supervisor", t.province))
    too_big = b"x" * (5 * 1024 * 1024 + 10)
    for method, path, action in [("POST", "/api/metadata", "import metadata"),
                                 ("POST", "/api/users", "manage users"),
                                 ("PUT", "/api/focalPoints/FPRT", "edit focal points"),
                                 ("POST", "/api/dataValueSets", "submit returns"),
                                 ("POST", f"/api/history?dataSet={codes['ds']}", "load history")]:
        for body, content_type in [(b"{not json", "application/json"), (too_big, "application/json"),
                                   (b"\x00\xff", "text/csv; charset=rot13")]:
            r = supervisor.request(method, path, data=body, headers={"Content-Type": content_type})
            assert r.status_code == 403, (path, body[:10], r.status_code, r.text[:200])
            assert action in r.json()["message"] and "'supervisor'" in r.json()["message"], r.text
    # a reporter may submit: its faulty body is still answered as such
    reporter = system.as_user(system.create_user("rt-role-rep", "reporter", t.province))
    r = reporter.request("POST", "/api/dataValueSets", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text


def test_exports_answer_in_the_format_the_accept_header_asks_for(system, world):
    """As DHIS2 chooses by Accept: a CSV reader asking for text/csv was handed JSON with a 200;
    what is not offered (ADX, XML) is a 406, and a client that takes anything gets JSON."""
    t, codes, village, _ = world
    analytics = f"/api/analytics?dx={codes['pop']}&ou={t.province}&pe=2024"
    export = f"/api/dataValueSets?dataSet={codes['ds']}&period=2024&orgUnit={t.province}&children=true"
    for path, accept, kind, first in [
            (analytics, None, "application/json", "{"), (analytics, "*/*", "application/json", "{"),
            (analytics, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json", "{"),
            (analytics, "text/csv", "text/csv", "dx,"), (analytics, "application/csv;q=0.9, application/json;q=0.5",
                                                           "text/csv", "dx,"),
            (analytics, "application/vnd.sdmx.data+csv", "application/vnd.sdmx.data+csv", "DATAFLOW,"),
            (export, "text/csv", "text/csv", "dataelement,"), (export, "application/json", "application/json", "{"),
            # a type's parameters keep it what it is (werkzeug's own match read none of these)
            (analytics, "application/json; charset=utf-8", "application/json", "{"),
            (export, "text/csv;charset=UTF-8", "text/csv", "dataelement,"),
            (analytics, "application/vnd.sdmx.data+csv;version=1.0.0", "application/vnd.sdmx.data+csv", "DATAFLOW,"),
            # naming nothing offered and no XML: JSON, as before
            (analytics, "text/html", "application/json", "{"), (export, "text/plain", "application/json", "{")]:
        r = system.get(path, headers={"Accept": accept} if accept else {})
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(kind), (accept, r.headers, r.text[:200])
        assert r.text.startswith(first), (accept, r.text[:100])
    for path in (analytics, export):
        for accept in ("application/adx+xml", "application/xml"):
            r = system.get(path, headers={"Accept": accept})
            assert r.status_code == 406 and "text/csv" in r.json()["message"], r.text


def test_a_parameter_given_twice_with_two_values_is_a_400_where_a_route_takes_one(system, world):
    """Completeness, validationResults, focal points, notifications and the others read one
    value of each parameter: ``ou=0301&ou=03`` answered the first and dropped the second (a
    supervisor's 200 for its own district, the province never judged). A 400 names it;
    analytics and dataValueSets, which answer every value, are left alone."""
    t, codes, village, _ = world
    district = t.districts[0]
    admin = system
    for method, path in [("GET", f"/api/completeness?ds={codes['ds']}&ou={district}&pe=2024&ou={t.province}"),
                         ("GET", f"/api/validationResults?ou={district}&ou={t.province}"),
                         ("GET", f"/api/focalPoints?orgUnit={district}&orgUnit={t.province}"),
                         ("GET", "/api/notifications?recipient=FPRT&recipient=FPX"),
                         ("GET", "/api/metadata?dataSets=true&dataSets=false"),
                         ("POST", "/api/deadlines/check?asOf=2024-06-01&asOf=2024-07-01"),
                         ("POST", "/api/notifications/retry?channel=webhook&channel=email"),
                         ("POST", "/api/dataValueSets?dryRun=true&dryRun=false"),
                         ("POST", f"/api/history?dataSet={codes['ds']}&dataSet=OTHER")]:
        r = admin.request(method, path, json=village_return(codes, village, "2024", 10, 11)
                          if "dataValueSets" in path else None)
        assert r.status_code == 400, (path, r.status_code, r.text[:300])
        name = path.rsplit("&", 1)[1].split("=")[0]
        assert f"{name} is given 2 times" in r.json()["message"], (path, r.text)
        # who is asking comes first: an unknown token is a 401 whatever the parameters
        assert system.request(method, path, token="nobody").status_code == 401, path
    # the same value twice is the value
    r = admin.get(f"/api/completeness?ds={codes['ds']}&ou={district}&pe=2024&ou={district}")
    assert r.status_code == 200 and r.json()["orgUnit"] == district, r.text
    r = admin.get(f"/api/analytics?dx={codes['pop']}&ou={district}&ou={t.province}&pe=2024")
    assert r.status_code == 200, r.text
