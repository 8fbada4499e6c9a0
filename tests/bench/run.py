"""statnet at national scale, measured against the broker's own ceiling in one run.

    python tests/bench/run.py            # the full run (10 million history values)
    python tests/bench/run.py --quick    # under a minute, small volumes

Starts statnet on the local RabbitMQ and PostgreSQL, on a database and vhost of its
own, as production splits it (``--layout split``: the HTTP edge and intake in one
process, the per-return pipeline in another; ``single``, one process; ``apart``, a
process per service, to see each service's part of the CPU), and measures:

* ceiling: a raw kombu publish-consume loop through one durable queue with
  publisher confirms (nameko's client stack), messages the size of a return event;
* metadata for all of Lao PDR: 18 provinces, 148 districts, about 8,500 villages,
  a monthly village return of 100 values (50 elements by sex);
* history: a year of that return for every village (10.2 million values) through
  the bulk path, and its rate (chunks taken in, then the yearly totals' rebuild);
* analytics p50/p99, province-by-year and country-by-year, at the stored volume;
* sustained end-to-end throughput, POST to AGGREGATED, returns/s and values/s;
  and again for a province's steady state: a new month into unit-years holding six
  (the burst above lands in a year's first month), and corrections replacing returns;
* latency POST to AGGREGATED at a steady 50 returns/s, p50/p99;
* peak resident memory of the statnet process;
* where the CPU went in the history load and the sustained run (statnet's
  processes, PostgreSQL, RabbitMQ, this client), per 1,000 values and per return:
  on two cores, the sum bounds the throughput;
* one core's speed at the start and the end (a fixed Python loop), because this
  kind of machine has run at half speed on some days and moved within a run.

Prints a table; the last line is
``ratio=<returns/s / ceiling msg/s> values_per_s=<n> p99_ms=<n> query_p99_ms=<n> rss_mb=<n>``;
writes the table to tests/bench/RESULTS.md with the machine it ran on.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from shared import green  # noqa: E402

green.patch()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import eventlet  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from kombu import Connection, Exchange, Queue  # noqa: E402

from shared.db import drop_database, ensure_database, sqlalchemy_url  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ELEMENTS = 50                       # x 2 combos = 100 values per return
HISTORY_YEAR, RETURN_YEAR = 2024, 2025
DS = "NAT_M"


# --------------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def rss_peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


_TICKS = os.sysconf("SC_CLK_TCK")  # /proc counts CPU time in clock ticks


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Each process's name and CPU seconds so far (user + system), from /proc."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        out[int(pid)] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return out


class CpuSplit:
    """Where a phase's CPU went, by part of the system: what a return costs each of them.

    Throughput on two cores is bounded by the sum of these, so this is the cost model
    the targets are judged against, measured in every run rather than by hand. A
    process that ends during the phase is missed (a PostgreSQL backend the pool opened
    beyond its size and closed again, say): a small undercount, never a double count."""

    def __init__(self, groups: dict[str, set[int]]):
        self.groups = groups
        self.started, self.before = time.perf_counter(), cpu_seconds()

    def _group(self, pid: int, name: str) -> str:
        for label, pids in self.groups.items():
            if pid in pids:
                return label
        if name == "postgres":
            return "PostgreSQL"
        if name in ("beam.smp", "erl_child_setup", "epmd", "inet_gethost"):
            return "RabbitMQ"
        return "other"

    def stop(self) -> tuple[dict[str, float], float]:
        """(CPU seconds per part, wall seconds); what no part claims is "other"."""
        after, wall = cpu_seconds(), time.perf_counter() - self.started
        used: dict[str, float] = {}
        for pid, (name, cpu) in after.items():
            label = self._group(pid, name)
            used[label] = used.get(label, 0.0) + cpu - self.before.get(pid, (name, 0.0))[1]
        return used, wall

    @staticmethod
    def describe(used: dict[str, float], wall: float, per: float, unit: str) -> str:
        parts = sorted(used.items(), key=lambda kv: -kv[1])
        cost = ", ".join(f"{label} {cpu / per * 1000:.1f}" for label, cpu in parts if cpu / wall >= 0.005)
        return (f"{cost} = {sum(used.values()) / per * 1000:.1f} ms per {unit} "
                f"({sum(used.values()) / wall:.2f} of {os.cpu_count()} cores busy)")


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for name, cmd in (("PostgreSQL", ["psql", "--version"]), ("RabbitMQ", ["rabbitmqctl", "version"])):
        try:
            versions[name] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            versions[name] = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), **versions}


# the server settings the figures depend on (the bench runs on whatever server it is given):
# a history load writes gigabytes of WAL, so its WAL buffers and checkpoint distance show
_SERVER_SETTINGS = ("shared_buffers", "wal_buffers", "max_wal_size", "synchronous_commit", "autovacuum")


def server_settings(engine) -> str:
    """Each setting as SHOW says it (128MB, not 16384 pages)."""
    with engine.connect() as conn:
        shown = dict(conn.execute(
            sa.text("SELECT name, current_setting(name) FROM unnest(CAST(:names AS text[])) AS name"),
            {"names": list(_SERVER_SETTINGS)}).all())
    return ", ".join(f"{name} {shown[name]}" for name in _SERVER_SETTINGS)


def core_speed() -> str:
    """One core's speed, so runs can be compared: machines of this kind sold as the same
    CPU have differed here by a factor of two in every figure at once (the evening of
    2026-11-26 and the next morning), and one machine's speed has moved by as much within
    minutes. The best of five runs of a fixed loop of Python additions, taken at the start
    and the end of a run."""
    def loop() -> float:
        started, total = time.perf_counter(), 0
        for i in range(10_000_000):
            total += i
        return time.perf_counter() - started
    return f"{min(loop() for _ in range(5)):.2f} s"


# --------------------------------------------------------------------- ceiling

def ceiling(amqp_uri: str, messages: int, size: int) -> float:
    """Publish with confirms and consume+ack through one durable queue; messages/s end to end."""
    exchange = Exchange("bench.ceiling", type="direct", durable=True)
    queue = Queue(f"bench.ceiling.{uuid.uuid4().hex[:6]}", exchange=exchange, routing_key="x", durable=True)
    body = {"data": "x" * size}
    done = eventlet.event.Event()
    received = [0]

    def consume():
        with Connection(amqp_uri) as conn:
            def on_message(_, message):
                message.ack()
                received[0] += 1
                if received[0] == messages:
                    done.send()

            with conn.Consumer(queue, callbacks=[on_message], prefetch_count=100):
                while not done.ready():
                    try:
                        conn.drain_events(timeout=1)
                    except socket.timeout:
                        pass

    with Connection(amqp_uri, transport_options={"confirm_publish": True}) as conn:
        queue(conn.channel()).declare()
        consumer = eventlet.spawn(consume)
        producer = conn.Producer()
        started = time.perf_counter()
        for _ in range(messages):
            producer.publish(body, exchange=exchange, routing_key="x", delivery_mode=2, serializer="json")
        done.wait(timeout=300)
        if not done.ready():
            raise SystemExit(f"ceiling: only {received[0]} of {messages} messages came back in 5 minutes")
        elapsed = time.perf_counter() - started
        consumer.wait()
        queue(conn.channel()).delete()
    return messages / elapsed


# --------------------------------------------------------------------- metadata

def national(quick: bool) -> tuple[dict, list[str]]:
    """Lao PDR: 18 provinces, 148 districts, ~8,500 villages (generated names)."""
    rng = random.Random(18)
    provinces = 2 if quick else 18
    districts_total = 10 if quick else 148
    villages_total = 400 if quick else 8500
    units = [{"code": "LA", "name": "Lao PDR", "nameLo": "ສປປ ລາວ", "openingDate": "1975-12-02"}]
    districts = []
    for p in range(1, provinces + 1):
        units.append({"code": f"{p:02d}", "name": f"Province {p:02d}", "parent": "LA", "openingDate": "1990-01-01"})
    for d in range(districts_total):
        province = d % provinces + 1
        code = f"{province:02d}{d // provinces + 1:02d}"
        districts.append(code)
        units.append({"code": code, "name": f"District {code}", "parent": f"{province:02d}",
                      "openingDate": "1990-01-01"})
    villages = []
    for v in range(villages_total):
        district = districts[v % len(districts)]
        code = f"{district}{v // len(districts) + 1:03d}"
        villages.append(code)
        units.append({"code": code, "name": f"Ban {code} (generated)", "nameLo": f"ບ້ານ {code}",
                      "parent": district, "openingDate": "1990-01-01", "generated": True})
    types = ["SUM"] * 35 + ["AVERAGE"] * 5 + ["AVERAGE_SUM_ORG_UNIT"] * 5 + ["LAST"] * 5
    rng.shuffle(types)
    elements = [{"code": f"E{i:03d}", "name": f"Indicator {i}", "valueType": "INTEGER_ZERO_OR_POSITIVE",
                 "aggregationType": types[i - 1], "disaggregation": ["M", "F"]} for i in range(1, ELEMENTS + 1)]
    rules = [{"code": f"R{i:02d}", "name": f"Rule {i}", "importance": "MEDIUM",
              "left": f"#{{E{2 * i - 1:03d}}}", "operator": "greater_than_or_equal_to",
              "right": f"#{{E{2 * i:03d}}} * 0", "missingValueStrategy": "SKIP_IF_ANY_VALUE_MISSING",
              "dataSet": DS} for i in range(1, 11)]
    doc = {"orgUnits": units, "dataElements": elements,
           "dataSets": [{"code": DS, "name": "Monthly village return", "periodType": "Monthly",
                         "orgUnitLevel": 4, "dataElements": [e["code"] for e in elements],
                         "timelyDays": 15, "expiryDays": 0}],
           "validationRules": rules}
    return doc, villages


def return_body(rng: random.Random, village: str, period: str) -> dict:
    return {"dataSet": DS, "period": period, "orgUnit": village,
            "dataValues": [{"dataElement": f"E{i:03d}", "categoryOptionCombo": c, "value": str(rng.randint(0, 999))}
                           for i in range(1, ELEMENTS + 1) for c in ("M", "F")]}


# --------------------------------------------------------------------- the run

LAYOUTS = {
    # every service in one process: one core of Python for everything
    "single": [[]],
    # the HTTP edge and intake in one process, the per-return pipeline in another
    "split": [["gateway", "registry", "submission", "notify"], ["validation", "aggregation"]],
    # each service in a process of its own, as compose runs them: whose CPU a return costs
    "apart": [["gateway"], ["registry"], ["submission"], ["notify"], ["validation"], ["aggregation"]],
}

# what a process of several services is called in the CPU split, by its first service
_PROCESS_NAMES = {"gateway": "edge", "validation": "pipeline"}


def _process_name(group: list[str]) -> str:
    if not group:
        return "(all services)"
    return group[0] if len(group) == 1 else _PROCESS_NAMES[group[0]]


class Statnet:
    def __init__(self, env: dict, layout: str = "single"):
        self.env = env
        self.log = open(os.path.join(tempfile.gettempdir(), f"statnet-bench-{os.getpid()}.log"), "w")
        self.layout = layout
        self.procs = [subprocess.Popen([sys.executable, "-m", "services.cli", "run", *group], env=env, cwd=ROOT,
                                       stdout=self.log, stderr=self.log) for group in LAYOUTS[layout]]
        self.proc = self.procs[0]
        self.base = f"http://{env['STATNET_HTTP']}"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {env['STATNET_ADMIN_TOKEN']}"
        deadline = time.monotonic() + 90
        while True:
            if any(p.poll() is not None for p in self.procs):
                raise SystemExit(f"statnet exited: see {self.log.name}")
            try:
                if self.http.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("statnet did not start")
            time.sleep(0.3)

    def rss_peak_mb(self) -> float:
        return sum(rss_peak_mb(p.pid) for p in self.procs)

    def cpu_split(self) -> CpuSplit:
        """Start counting CPU: each statnet process, PostgreSQL, RabbitMQ and this client."""
        groups = {"statnet " + _process_name(group): {proc.pid}
                  for group, proc in zip(LAYOUTS[self.layout], self.procs, strict=True)}
        return CpuSplit({**groups, "bench client": {os.getpid()}})

    def stop(self, keep_log: bool = False):
        """SIGTERM every statnet process; their log stays only when asked (a failed run, --keep)."""
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()
        if keep_log:
            print(f"statnet's log: {self.log.name}", file=sys.stderr)
        else:
            os.remove(self.log.name)


def history(st: Statnet, villages: list[str], months: int, year: int = HISTORY_YEAR) -> tuple[int, float, float]:
    """The first ``months`` of ``year`` of the return for every village through POST
    /api/history; (values, seconds until every chunk was taken in, seconds until the yearly
    totals were rebuilt too)."""
    rng = random.Random(year)
    header = "dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,lastupdated,comment,followup\n"
    per_chunk = 40_000
    total, started = 0, time.perf_counter()

    def rows():
        for m in range(1, months + 1):
            period = f"{year}{m:02d}"
            for v in villages:
                for i in range(1, ELEMENTS + 1):
                    yield f"E{i:03d},{period},{v},M,,{rng.randint(0, 999)},,,,\n"
                    yield f"E{i:03d},{period},{v},F,,{rng.randint(0, 999)},,,,\n"

    def chunks():
        chunk = []
        for row in rows():
            chunk.append(row)
            if len(chunk) == per_chunk:
                yield header + "".join(chunk)
                chunk = []
        if chunk:
            yield header + "".join(chunk)

    # two chunks at a time, as `statnet history load` sends them
    for n in eventlet.GreenPool(2).imap(lambda body: _post_history(st, body), chunks()):
        total += n
    chunks_done = time.perf_counter() - started
    # and, as the command does, say that no chunk follows
    assert st.http.post(f"{st.base}/api/history/done", timeout=60).status_code == 200
    while True:
        status = st.http.get(f"{st.base}/api/history", timeout=60).json()
        if not status["pendingYearTotals"] and not status["refreshingStatistics"]:
            break
        time.sleep(0.5)
    return total, chunks_done, time.perf_counter() - started


def _post_history(st: Statnet, body: str) -> int:
    r = st.http.post(f"{st.base}/api/history?dataSet={DS}", data=body.encode(),
                     headers={"Content-Type": "text/csv"}, timeout=600)
    if r.status_code != 200:
        raise SystemExit(f"history chunk refused: {r.status_code} {r.text[:500]}")
    return r.json()["rows"]


def query_latency(st: Statnet, ou: list[str], n: int) -> list[float]:
    out = []
    for i in range(n):
        dx = f"E{i % ELEMENTS + 1:03d}"
        started = time.perf_counter()
        r = st.http.get(f"{st.base}/api/analytics", params={"dx": dx, "ou": ou[i % len(ou)],
                                                             "pe": str(HISTORY_YEAR)}, timeout=60)
        out.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200 or not r.json()["rows"]:
            raise SystemExit(f"analytics failed: {r.status_code} {r.text[:300]}")
    return out


def aggregated(engine, ids: list[str]) -> dict[str, dt.datetime]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, aggregated_at FROM submission.return "
                                    "WHERE id = ANY(:ids) AND status = 'AGGREGATED'"), {"ids": ids})
        return {r.id: r.aggregated_at for r in rows}


def wait_aggregated(engine, ids: list[str], timeout: float) -> dict[str, dt.datetime]:
    deadline = time.monotonic() + timeout
    while True:
        done = aggregated(engine, ids)
        if len(done) == len(ids) or time.monotonic() > deadline:
            return done
        time.sleep(0.25)


def flat_out(st: Statnet, engine, bodies: list[dict]) -> tuple[list[tuple[str, float]], float, tuple]:
    """Send returns as fast as 32 clients can and wait until each is AGGREGATED; (what was
    sent, the seconds it took, where the CPU went)."""
    started, cpu = time.perf_counter(), st.cpu_split()
    sent = post_returns(st, bodies, concurrency=32, rate=None)
    done = wait_aggregated(engine, [i for i, _ in sent], timeout=900)
    elapsed = time.perf_counter() - started
    used = cpu.stop()
    if len(done) != len(sent):
        raise SystemExit(f"only {len(done)} of {len(sent)} returns aggregated")
    return sent, elapsed, used


def post_returns(st: Statnet, bodies: list[dict], concurrency: int, rate: float | None):
    """Send returns (paced at ``rate``/s when given); [(id, sent_at)]."""
    pool = eventlet.GreenPool(concurrency)
    sent: list[tuple[str, float]] = []
    start = time.time()

    def one(n_body):
        n, body = n_body
        if rate:
            delay = start + n / rate - time.time()
            if delay > 0:
                eventlet.sleep(delay)
        t0 = time.time()
        r = st.http.post(f"{st.base}/api/dataValueSets", json=body, timeout=120)
        if r.status_code != 202:
            raise SystemExit(f"return refused: {r.status_code} {r.text[:300]}")
        return r.json()["id"], t0

    for result in pool.imap(one, list(enumerate(bodies))):
        sent.append(result)
    return sent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small volumes, under a minute")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards (to inspect plans)")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="split",
                        help="how the services are spread over processes")
    parser.add_argument("--burst", type=int, help="returns in the sustained burst (default 300 quick, 3000 full)")
    parser.add_argument("--latencies", metavar="CSV",
                        help="write each paced return's id, time sent and latency (to see where the tail is)")
    args = parser.parse_args()
    quick = args.quick
    stamp = f"{int(time.time())}_{secrets.token_hex(2)}"
    amqp_base = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
    db_base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/statnet")
    vhost = f"bench_{stamp}"
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    amqp = amqp_base.rstrip("/") + "/" + vhost
    database = db_base.rsplit("/", 1)[0] + f"/statnet_bench_{stamp}"
    ensure_database(database)
    engine = sa.create_engine(sqlalchemy_url(database))
    results: dict[str, str] = {}
    st, finished = None, False
    try:
        core_at_start = core_speed()
        print("measuring the broker's ceiling ...", file=sys.stderr)
        event_size = len(json.dumps(return_body(random.Random(0), "010101001", "202501")))
        ceil = ceiling(amqp, 2000 if quick else 20000, event_size)
        results["ceiling: kombu publish (confirms) + consume, 1 durable queue"] = f"{ceil:,.0f} msg/s"

        env = {**os.environ, "AMQP_URI": amqp, "DATABASE_URL": database,
               "STATNET_HTTP": f"127.0.0.1:{free_port()}", "STATNET_ADMIN_TOKEN": secrets.token_urlsafe(16),
               "SMTP_PORT": str(free_port()), "STATNET_LOG_FORMAT": "json",
               "STATNET_DEADLINE_CHECK_SECONDS": "86400"}
        st = Statnet(env, args.layout)
        results["PostgreSQL server"] = server_settings(engine)
        results["layout"] = f"{args.layout}: " + " + ".join(",".join(g) or "all services" for g in LAYOUTS[args.layout])
        doc, villages = national(quick)
        started = time.perf_counter()
        r = st.http.post(f"{st.base}/api/metadata", json=doc, timeout=600)
        assert r.status_code == 200, r.text[:500]
        results["metadata: org units / data elements"] = f"{len(doc['orgUnits']):,} / {len(doc['dataElements'])}"
        results["metadata import (all replicas current)"] = f"{time.perf_counter() - started:.1f} s"

        print("loading history ...", file=sys.stderr)
        cpu = st.cpu_split()
        values, chunks_seconds, seconds = history(st, villages, 1 if quick else 12)
        results["history load"] = f"{values:,} values in {seconds:.0f} s = {values / seconds:,.0f} values/s"
        results["history load: chunks taken in / yearly totals rebuilt"] = (
            f"{chunks_seconds:.0f} s ({values / chunks_seconds:,.0f} values/s) / {seconds - chunks_seconds:.0f} s more")
        results["history load, CPU"] = CpuSplit.describe(*cpu.stop(), values / 1000, "1,000 values")

        print("querying ...", file=sys.stderr)
        provinces = [u["code"] for u in doc["orgUnits"] if len(u["code"]) == 2 and u["code"] != "LA"]
        n = 30 if quick else 200
        query_latency(st, ["LA"], 5)  # warm caches
        prov = query_latency(st, provinces, n)
        country = query_latency(st, ["LA"], n)
        results["analytics province-by-year p50 / p99"] = f"{pct(prov, 50):.1f} / {pct(prov, 99):.1f} ms"
        results["analytics country-by-year p50 / p99"] = f"{pct(country, 50):.1f} / {pct(country, 99):.1f} ms"

        # the deadline check over every village and month of the look-back: one statement
        started = time.perf_counter()
        r = st.http.post(f"{st.base}/api/deadlines/check?asOf={RETURN_YEAR + 1}-01-20", timeout=600)
        assert r.status_code == 200, r.text[:500]
        results["deadline check, whole country (late unit-periods found)"] = (
            f"{(time.perf_counter() - started) * 1000:,.0f} ms ({r.json()['late']:,})")

        print("sustained throughput ...", file=sys.stderr)
        rng = random.Random(2025)
        burst_n = args.burst or (300 if quick else 3000)
        cells = [(v, f"{RETURN_YEAR}{m:02d}") for m in range(1, 13) for v in villages]
        rng.shuffle(cells)
        burst = [return_body(rng, v, p) for v, p in cells[:burst_n]]
        sent, elapsed, burst_cpu = flat_out(st, engine, burst)
        returns_per_s = len(sent) / elapsed
        results["end to end, POST to AGGREGATED"] = (f"{len(sent):,} returns in {elapsed:.1f} s = "
                                                    f"{returns_per_s:,.1f} returns/s, "
                                                    f"{returns_per_s * 2 * ELEMENTS:,.0f} values/s")
        results["end to end, CPU"] = CpuSplit.describe(*burst_cpu, len(sent), "return")

        print("latency at 50 returns/s ...", file=sys.stderr)
        paced_n = 250 if quick else 1500
        paced = [return_body(rng, v, p) for v, p in cells[burst_n:burst_n + paced_n]]
        cpu = st.cpu_split()
        sent = post_returns(st, paced, concurrency=64, rate=50.0)
        done = wait_aggregated(engine, [i for i, _ in sent], timeout=600)
        paced_cpu = cpu.stop()
        latencies = [(done[i].timestamp() - t0) * 1000 for i, t0 in sent if i in done]
        if len(latencies) != len(sent):
            raise SystemExit(f"only {len(latencies)} of {len(sent)} paced returns aggregated")
        results["latency at 50 returns/s, p50 / p99"] = f"{pct(latencies, 50):.0f} / {pct(latencies, 99):.0f} ms"
        # what a return costs when the system is not flat out: smaller batches than the
        # burst's, so more a return; the busier this leaves the machine, the longer the queues
        results["latency at 50 returns/s, CPU"] = CpuSplit.describe(*paced_cpu, len(sent), "return")
        if args.latencies:
            with open(args.latencies, "w") as out:
                out.write("id,sent_at,latency_ms\n")
                out.writelines(f"{i},{t0:.3f},{ms:.1f}\n" for (i, t0), ms in zip(sent, latencies))

        # a province's steady state: a month's returns into unit-years that already hold
        # earlier months (the burst above lands in nearly empty unit-years, a year's first
        # month), where each return's yearly rows are moved by what it changed rather than
        # summed again; then corrections, each replacing a return of the burst
        print("end to end into years with data ...", file=sys.stderr)
        steady = villages[:100 if quick else 1500]
        history(st, steady, 6, year=HISTORY_YEAR - 1)  # January to June, not measured
        cases = [("a new month (July) into a year holding six",
                  [return_body(rng, v, f"{HISTORY_YEAR - 1}07") for v in steady])]
        # a district correcting what it sent: every layer replaces stored values (validation's
        # accepted values too, which a month of history is not in)
        cases.append(("corrections, each replacing an earlier return",
                      [return_body(rng, v, p) for v, p in cells[:min(burst_n, 100 if quick else 1000)]]))
        for label, bodies in cases:
            sent, elapsed, case_cpu = flat_out(st, engine, bodies)
            results[f"end to end, {label}"] = f"{len(sent):,} returns in {elapsed:.1f} s = {len(sent) / elapsed:,.1f} returns/s"
            results[f"end to end, {label}, CPU"] = CpuSplit.describe(*case_cpu, len(sent), "return")
        rss = st.rss_peak_mb()
        results["one core: 10 million Python additions, at start / end"] = f"{core_at_start} / {core_speed()}"
        results[f"statnet peak RSS ({len(st.procs)} process{'es' if len(st.procs) > 1 else ''})"] = \
            f"{rss:,.0f} MB"
        finished = True
    finally:
        if st is not None:
            st.stop(keep_log=args.keep or not finished)
        engine.dispose()
        if args.keep:
            print(f"kept {database}", file=sys.stderr)
        else:
            drop_database(database)
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)

    width = max(len(k) for k in results)
    table = "\n".join(f"| {k:<{width}} | {v} |" for k, v in results.items())
    summary = (f"ratio={returns_per_s / ceil:.4f} values_per_s={returns_per_s * 2 * ELEMENTS:.0f} "
               f"p99_ms={pct(latencies, 99):.0f} query_p99_ms={max(pct(prov, 99), pct(country, 99)):.1f} "
               f"rss_mb={rss:.0f}")
    print(table)
    print(summary)
    if not quick:
        write_results(table, summary)
    return 0


def write_results(table: str, summary: str) -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
    m = machine()
    header = "| measure | result |\n|---|---|\n"
    with open(path, "a" if os.path.exists(path) else "w", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write("# statnet benchmark results\n\nWritten by `python tests/bench/run.py`; newest run last.\n")
        f.write(f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
                f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; "
                f"{m['PostgreSQL']}; RabbitMQ {m['RabbitMQ']}\n\n{header}{table}\n\n`{summary}`\n")


if __name__ == "__main__":
    sys.exit(main())
