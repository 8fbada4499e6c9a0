"""``statnet demo``: Luang Namtha end to end on the local broker and database.

It starts every service in this process, then acts as the province's users
do, over the public HTTP API only:

1. the admin loads the reference metadata (province, districts, villages,
   sector data sets, rules, focal points);
2. each district statistics centre enters its villages' annual returns for
   last year and its monthly health and price returns for last month (one
   district sends no health return; a few returns carry mistakes);
3. the operator runs the deadline check;
4. it prints what arrived, what was rejected and why, the province totals,
   completeness, and the alerts that went out by e-mail.

If nothing listens at SMTP_HOST:SMTP_PORT, a local SMTP server is started
for the run, so the alerts are really delivered somewhere you can read.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter

from services import runner
from services.registry import reference
from shared import mailsink
from shared.config import Settings
from shared.expressions import SYMBOLS
from shared.periods import Period, today

FINAL = {"AGGREGATED", "REJECTED"}


class Client:
    """A minimal JSON client of the public API."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def call(self, method: str, path: str, body=None, token: str | None = None,
             content_type: str = "application/json"):
        data = None
        if body is not None:
            data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _village_values(rng: random.Random) -> dict:
    hh = rng.randint(40, 260)
    males = int(hh * rng.uniform(2.3, 2.8))
    females = int(hh * rng.uniform(2.3, 2.9))
    pop = males + females
    return {("POP", "M"): males, ("POP", "F"): females, ("HH", None): hh,
            ("HH_POOR", None): int(hh * rng.uniform(0.05, 0.3)),
            ("BIRTHS", "M"): int(pop * rng.uniform(0.008, 0.014)),
            ("BIRTHS", "F"): int(pop * rng.uniform(0.008, 0.014)),
            ("DEATHS", "M"): int(pop * rng.uniform(0.002, 0.005)),
            ("DEATHS", "F"): int(pop * rng.uniform(0.002, 0.005)),
            ("ENROL", "M"): int(males * rng.uniform(0.15, 0.22)),
            ("ENROL", "F"): int(females * rng.uniform(0.14, 0.22))}


def _return(ds: str, period: str, org_unit: str, values: dict) -> dict:
    return {"dataSet": ds, "period": period, "orgUnit": org_unit,
            "dataValues": [{"dataElement": de, **({"categoryOptionCombo": coc} if coc else {}),
                            "value": str(v)} for (de, coc), v in values.items()]}


def plan_returns(doc: dict, month: Period, year: Period) -> list[tuple[str, dict, str]]:
    """(district reporter, return body, note) for the month; deterministic."""
    rng = random.Random(int(month.code))
    out = []
    villages = [u for u in doc["orgUnits"] if u.get("generated")]
    for i, v in enumerate(villages):
        values = _village_values(rng)
        note = ""
        if i % 137 == 5:     # a typing slip: households written into the population field
            values[("HH", None)] = values[("POP", "M")] + values[("POP", "F")] + 15
            note = "households > population"
        elif i % 97 == 11:   # an implausible birth count: accepted, with a warning
            values[("BIRTHS", "F")] = (values[("POP", "M")] + values[("POP", "F")]) // 10
            note = "births above 6%"
        out.append((v["parent"], _return("VILLAGE_Y", year.code, v["code"], values), note))
    for code, *_ in reference.DISTRICTS:
        tests = rng.randint(300, 900)
        health = {("OPD", "M"): rng.randint(900, 2500), ("OPD", "F"): rng.randint(1000, 2800),
                  ("DELIV_FAC", None): rng.randint(20, 90), ("MAL_TEST", None): tests,
                  ("MAL_POS", None): int(tests * rng.uniform(0.01, 0.08)), ("DPT3", None): rng.randint(30, 120)}
        note = ""
        if code == "0303":   # positives copied into the tests column
            health[("MAL_POS", None)] = tests + 40
            note = "malaria positives > tests"
        if code != "0305":   # Nalae sends no health return: it will be late
            out.append((code, _return("HEALTH_M", month.code, code, health), note))
        prices = {("PRICE_RICE", None): rng.randint(14, 19) * 1000, ("PRICE_PORK", None): rng.randint(55, 75) * 1000,
                  ("PRICE_DIESEL", None): rng.randint(24, 29) * 1000}
        out.append((code, _return("PRICES_M", month.code, code, prices), ""))
    return out


def _before(shown: str | None, moment: float) -> bool:
    """Whether a time the API shows (ISO 8601, +07:00) is before ``moment`` (epoch seconds)."""
    import datetime as dt

    return shown is not None and dt.datetime.fromisoformat(shown).timestamp() < moment


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _alerts_since(api, began) -> list[dict]:
    """This run's alerts (one goes out once, so a second run has none of its own): the list is
    oldest first, a page at a time, so read from its last page back to the first older one."""
    _, notes = api.call("GET", "/api/notifications?pageSize=1")
    page = notes["pager"]["total"] // ALERTS_PAGE + 1
    out: list[dict] = []
    while page >= 1:
        _, notes = api.call("GET", f"/api/notifications?page={page}&pageSize={ALERTS_PAGE}")
        new = [n for n in notes["notifications"] if not _before(n["createdAt"], began)]
        out = new + out
        if len(new) < len(notes["notifications"]):
            break
        page -= 1
    return out


ALERTS_PAGE = 10_000


def main(settings: Settings, month: str | None = None) -> int:
    admin = settings.admin_token or secrets.token_urlsafe(24)
    # no timed deadline check: the demo runs its one by hand, and left to the timer a check
    # due at once (the last one long ago, or another go-live day than the database's) chased
    # every unit of the database, whatever the demo leaves out
    settings = settings.replace(admin_token=admin, deadline_timer=False)
    if not _port_free(settings.http_host, settings.http_port):
        print(f"statnet demo: {settings.http_address} is in use (is statnet already running?); "
              "stop it or set STATNET_HTTP to a free address")
        return 2
    if settings.smtp_port == settings.http_port and (
            settings.smtp_host == settings.http_host or "0.0.0.0" in (settings.smtp_host, settings.http_host)):
        # the demo's own mail server would take the address its HTTP is to listen on
        print(f"statnet demo: SMTP_PORT {settings.smtp_port} is STATNET_HTTP's port too; "
              "give them different ports")
        return 2
    the_month = Period.parse(month) if month else Period.containing("Monthly", today()).previous()
    year = Period.containing("Yearly", the_month.start).previous()

    sink, maildir = None, None
    if not mailsink.listening(settings.smtp_host, settings.smtp_port):
        maildir = tempfile.mkdtemp(prefix="statnet-demo-mail-")
        sink = mailsink.start(settings.smtp_host, settings.smtp_port, maildir)
        # a plain server of its own: the relay's TLS and login are not its
        settings = settings.replace(smtp_security="none", smtp_username=None, smtp_password=None)
    services = None
    try:
        services = runner.build(settings)
        runner.start_edge_last(services)  # as `statnet run` does: no request before its service takes calls
        return _run(Client(f"http://{settings.http_address}", admin), the_month, year, maildir)
    finally:
        if services is not None:
            runner.stop_edge_first(services)
        # (also when the services could not start: a mail server left behind held its port)
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        if maildir is not None and not any(os.scandir(maildir)):
            os.rmdir(maildir)  # nothing arrived (a second run sends no alert twice): nothing to keep


def _run(api: Client, month: Period, year: Period, maildir: str | None) -> int:
    print(f"statnet demo: Luang Namtha (ຫຼວງນ້ຳທາ), returns for {month.code} and village returns for {year.code}\n")
    doc = reference.load()
    # the deadline check chases every unit of the database: on one holding units of its own
    # (a province's, or another run's) it alerted all their supervisors (56,367 alerts in an
    # acceptance probe's run); the demo then leaves the check out and says why
    status, stored = api.call("GET", "/api/metadata")
    if status != 200:
        print(f"could not read the stored metadata ({status}): {json.dumps(stored, ensure_ascii=False)[:500]}")
        return 1
    others = sorted({u["code"] for u in stored.get("orgUnits", [])} - {u["code"] for u in doc["orgUnits"]})
    status, body = api.call("POST", "/api/metadata", doc)
    if status != 200:
        print(f"metadata import failed ({status}): {json.dumps(body, ensure_ascii=False)[:2000]}")
        return 1
    print(f"Metadata: {len(doc['orgUnits'])} org units, {len(doc['dataElements'])} data elements, "
          f"{len(doc['dataSets'])} data sets, {len(doc['validationRules'])} rules, "
          f"{len(doc['focalPoints'])} focal points ({body['stats']['created']} created, "
          f"{body['stats']['updated']} updated, {body['stats']['ignored']} unchanged)")

    tokens = {}
    for code, *_ in reference.DISTRICTS:
        status, user = api.call("POST", "/api/users", {"username": f"FP-{code}-REP", "role": "reporter",
                                                       "orgUnit": code})
        if status != 201:
            print(f"user FP-{code}-REP not created ({status}): {json.dumps(user, ensure_ascii=False)[:400]}")
            return 1
        tokens[code] = user["token"]

    plan = plan_returns(doc, month, year)
    run_began = time.time() - 1  # what this run did, apart from what an earlier run left
    started = time.monotonic()
    receipts = []
    refused = 0
    for district, body, note in plan:
        status, answer = api.call("POST", "/api/dataValueSets", body, token=tokens[district])
        if status != 202:
            print(f"  refused ({status}): {json.dumps(answer, ensure_ascii=False)[:400]}")
            refused += 1
            continue
        receipts.append((answer["id"], body, note, district))
    print(f"Returns sent: {len(receipts)} in {time.monotonic() - started:.1f}s")

    outcome = {}
    deadline = time.monotonic() + 120
    pending = [r[0] for r in receipts]
    while pending and time.monotonic() < deadline:
        still = []
        for rid in pending:
            _, sub = api.call("GET", f"/api/submissions/{rid}")
            outcome[rid] = sub
            if sub["status"] not in FINAL:
                still.append(rid)
        pending = still
        if pending:
            time.sleep(0.3)
    counts = {}
    for sub in outcome.values():
        counts[sub["status"]] = counts.get(sub["status"], 0) + 1
    print(f"Returns processed in {time.monotonic() - started:.1f}s: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if pending:
        print(f"  {len(pending)} return(s) not processed within 2 minutes: is every service running?")
    again = sum(1 for sub in outcome.values() if _before(sub.get("receivedAt"), run_began))
    if again:
        print(f"  ({again} of them byte-identical to a return received in an earlier run: the same "
              "receipt, counted once)")

    names = {u["code"]: u["name"] for u in doc["orgUnits"]}
    print("\nRejected (nothing of these is in any total):")
    for rid, body, _note, _ in receipts:
        sub = outcome[rid]
        if sub["status"] == "REJECTED":
            why = "; ".join(f"{v.get('name') or v['rule']}: {_fmt(v['left'])} "
                            f"{SYMBOLS.get(v['operator'], v['operator'])} {_fmt(v['right'])}"
                            for v in sub["violations"] if v["importance"] == "HIGH")
            print(f"  {body['dataSet']:<9} {body['period']:<7} {names[body['orgUnit']]:<34} {why}")
    print("\nAccepted with warnings:")
    for rid, body, _note, _ in receipts:
        sub = outcome[rid]
        warnings = [v for v in sub.get("violations", []) + sub.get("outliers", []) if v["importance"] != "HIGH"]
        if sub["status"] != "REJECTED" and warnings:
            print(f"  {body['dataSet']:<9} {body['period']:<7} {names[body['orgUnit']]:<34} "
                  + "; ".join(f"{v.get('name') or v['rule']} [{v['importance']}]" for v in warnings))

    print("\nProvince totals, Luang Namtha (03):")
    queries = [("POP;POP.M;POP.F;HH;HH_POOR;BIRTHS;DEATHS;ENROL", year.code),
               ("OPD;DELIV_FAC;MAL_TEST;MAL_POS;DPT3;PRICE_RICE;PRICE_PORK;PRICE_DIESEL", month.code)]
    labels = {d["code"]: d["name"] for d in doc["dataElements"]}
    for dx, pe in queries:
        _, result = api.call("GET", f"/api/analytics?dx={dx}&ou=03&pe={pe}")
        for row in result["rows"]:
            de, _, coc = row["dx"].partition(".")
            label = labels[de] + (f" ({coc})" if coc else "")
            print(f"  {pe:<7} {label:<44} {_fmt(row['value']):>12}")

    if others:
        status, report = None, None
        print(f"\nDeadline check left out: the database holds {len(others)} org unit(s) the demo did not load "
              f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}), whose supervisors it would "
              "alert. Run the demo on a database of its own (DATABASE_URL=.../statnet_demo) to see it.")
    else:
        status, report = api.call("POST", f"/api/deadlines/check?asOf={today().isoformat()}")
    if status == 200:
        print(f"\nDeadline check as of {today()}: {report.get('late', 0)} late return(s), "
              f"{report.get('due', 0)} reminder(s) due")
        print("  (every period of the last STATNET_LATE_LOOKBACK_DAYS days that an assigned open unit has "
              "not sent counts: this demo sends one month, so the earlier months and quarters are late too; "
              "at go-live, STATNET_REPORTING_START leaves the months that went on paper alone)")

    for ds, pe in (("HEALTH_M", month.code), ("PRICES_M", month.code), ("VILLAGE_Y", year.code)):
        status, c = api.call("GET", f"/api/completeness?ds={ds}&ou=03&pe={pe}")
        if status == 200:
            print(f"Completeness {ds} {pe}: {c['actual']}/{c['expected']} "
                  f"({c['rate']:.1f}%), on time {c['onTime']} ({c['onTimeRate']:.1f}%)")  # 410/412 is not 100%
    print("  (on time: received within the data set's timelyDays after the period's end; the demo sends "
          "its returns today, after that window)")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alerts = _alerts_since(api, run_began)
        if all(n["status"] != "PENDING" for n in alerts):
            break
        time.sleep(0.5)
    tally = Counter((n["type"], n["channel"], n["status"]) for n in alerts)
    print(f"\nAlerts of this run ({len(alerts)}): "
          + (", ".join(f"{k[0]} by {k[1]} {k[2]} {v}" for k, v in sorted(tally.items()))
             or "none new (each goes out once per type, recipient, unit, data set and period)"))
    if any(n["type"] == "LATE_DIGEST" for n in alerts):
        print("  (a supervisor who takes a daily digest gets its LATE_RETURN alerts in one LATE_DIGEST e-mail)")
    # a month of a province is hundreds of late village returns: the first few of each type
    shown = [n for kind in sorted({n["type"] for n in alerts}) for n in [a for a in alerts if a["type"] == kind][:8]]
    for n in shown:
        print(f"  {n['type']:<15} {n['dataSet']:<9} {n['period']:<10} {names.get(n['orgUnit'], n['orgUnit']):<30} "
              f"-> {n['recipient']:<12} {n['channel']:<7} {n['status']}")
    if len(shown) < len(alerts):
        print(f"  ... and {len(alerts) - len(shown)} more (GET /api/notifications)")
    if maildir:
        mails = mailsink.read(maildir)
        print(f"\n{len(mails)} e-mail(s) delivered to the local SMTP server"
              + (f" ({maildir}); the first:" if mails else ""))
        if mails:
            first = mails[0]
            print(f"  To: {first['To']}\n  Subject: {first['Subject']}\n")
            print("    " + first.get_content().strip().replace("\n", "\n    "))
    # a demonstration that went wrong says so to whatever ran it (make demo, a script)
    return 1 if refused or pending else 0
