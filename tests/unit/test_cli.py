"""The statnet command: a backend nobody answers at is named, with its address, at once."""
import os
import socket
import subprocess
import sys

import pytest

from services import cli
from shared.config import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_database_and_broker_are_named():
    db, amqp = _free_port(), _free_port()
    env = {"DATABASE_URL": f"postgresql://postgres:secret@127.0.0.1:{db}/statnet",
           "AMQP_URI": f"amqp://guest:guest@127.0.0.1:{amqp}/"}
    problems = "\n".join(cli.unreachable(Settings.from_env(env)))
    assert f"the database at 127.0.0.1:{db} is unreachable" in problems and "DATABASE_URL=" in problems
    assert f"the broker at 127.0.0.1:{amqp} is unreachable" in problems and "AMQP_URI=" in problems
    assert "secret" not in problems
    # and the command says so in those lines, exit 2, no traceback
    done = subprocess.run([sys.executable, "-m", "services.cli", "migrate"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"the database at 127.0.0.1:{db} is unreachable" in done.stderr


def test_status_reports_what_it_can_read_and_names_what_it_cannot():
    env = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_free_port()}/statnet",
           "AMQP_URI": f"amqp://guest:guest@127.0.0.1:{_free_port()}/"}
    done = subprocess.run([sys.executable, "-m", "services.cli", "status"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # unwell, as the README says; not a crash
    lines = done.stdout.splitlines()
    assert any(line.split()[:2] == ["aggregation", "?"] for line in lines if line.strip())
    assert any(line.startswith("UNREADABLE: the broker") for line in lines)
    assert any(line.startswith("UNREADABLE: the database at 127.0.0.1") for line in lines)


def test_a_backend_that_refuses_statnets_login_is_named_without_a_traceback(backend):
    """Reachable, but a vhost that does not exist and a role that does not: said as such."""
    from sqlalchemy.engine import make_url

    db = make_url(backend.database_base).set(username="nosuchrole", password=None)
    env = {"DATABASE_URL": db.render_as_string(hide_password=False),
           "AMQP_URI": backend.amqp_uri("no-such-vhost")}
    problems = "\n".join(cli.unreachable(Settings.from_env(env)))
    assert "the database at" in problems and 'role "nosuchrole" does not exist' in problems
    assert "the broker at" in problems and "refused statnet" in problems and "no-such-vhost" in problems
    done = subprocess.run([sys.executable, "-m", "services.cli", "migrate"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "nosuchrole" in done.stderr


def test_an_http_address_in_use_is_named_before_statnet_run_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        assert "already in use" in cli.http_address_taken(Settings.from_env({"STATNET_HTTP": address}))
    assert cli.http_address_taken(Settings.from_env({"STATNET_HTTP": address})) is None


def test_wrong_usage_is_one_line_and_exit_2_never_a_traceback(tmp_path):
    def statnet(*args):
        return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "AMQP_URI": f"amqp://guest:guest@127.0.0.1:{_free_port()}/",
                                               "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_free_port()}/x",
                                               "STATNET_ADMIN_TOKEN": "t"})

    for args, says in [(("migrate", "foo"), "unknown schema(s): foo"),
                       (("migrate", "gateway"), "the gateway has none"),
                       (("demo", "--month", "2026Q3"), "--month"),
                       (("demo", "--month", "202613"), "--month"),
                       (("demo", "--month", "2026-10"), "--month")]:
        done = statnet(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr)
        assert says in done.stderr, (args, done.stderr)
    # an empty file is no DHIS2 CSV; a header alone has nothing to send, and no server to
    # tell: said, not a traceback
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    done = statnet("history", "load", str(empty), "--data-set", "X", "--url", f"http://127.0.0.1:{_free_port()}")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "is empty" in done.stderr, done.stderr
    empty.write_text("dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value\n")
    done = statnet("history", "load", str(empty), "--data-set", "X", "--url", f"http://127.0.0.1:{_free_port()}")
    assert done.returncode == 1 and "Traceback" not in done.stderr and "cannot reach" in done.stderr, done.stderr
    assert "no data lines" in done.stderr


def _report(**service) -> dict:
    import datetime as dt

    well = {"up": True, "queued": 0, "dead_letters": 0, "outbox": 0, "outbox_age": 0.0}
    return {"at": dt.datetime(2026, 11, 28, 3, 0, tzinfo=dt.timezone.utc), "completeness": [], "problems": [],
            "retrying": service.pop("retrying", 0), "alerts": service.pop("alerts", None),
            "services": {"submission": well, "validation": {**well, **service}}}


def test_status_says_in_words_why_it_is_not_healthy_and_counts_retries():
    from services import status

    text, healthy = status.render(_report())
    assert healthy and text.splitlines()[-1] == "healthy"
    # retrying alone is not unwell (a passing failure is retried), but it is said
    text, healthy = status.render(_report(retrying=2))
    assert healthy and "retrying: 2 message(s) wait in the delay queues" in text
    text, healthy = status.render(_report(up=False, dead_letters=3, outbox_age=900.0))
    assert not healthy
    assert text.splitlines()[-1] == ("NOT HEALTHY: validation is down; validation parked 3 dead letter(s) "
                                     "(statnet dlq list validation, then replay or drop); validation's outbox has not been "
                                     "published for 900s")


def test_status_counts_alerts_waiting_and_given_up_and_an_hour_waiting_is_unwell():
    from services import status

    text, healthy = status.render(_report(alerts={"waiting": 3, "oldest": 40.0, "given_up": 2}))
    assert healthy and "alerts: 3 waiting to go out (oldest 40s), 2 given up" in text
    text, healthy = status.render(_report(alerts={"waiting": 260, "oldest": 5400.0, "given_up": 0}))
    assert not healthy and text.splitlines()[-1].startswith("NOT HEALTHY: alerts have waited 5400s to go out")
    text, healthy = status.render(_report(alerts={"waiting": 0, "oldest": 0.0, "given_up": 0}))
    assert healthy and "alerts:" not in text


def test_status_warns_of_autovacuum_off_without_calling_it_unwell():
    """Every return updates and deletes rows; without autovacuum their dead space grows for
    ever (a soak probe: 12 MB of an empty outbox after 9,400 returns)."""
    from services import status

    text, healthy = status.render({**_report(), "autovacuum": False})
    assert healthy and "WARNING: PostgreSQL's autovacuum is off" in text
    for known in (True, None):  # on; or the database unreadable (said as such)
        assert "autovacuum" not in status.render({**_report(), "autovacuum": known})[0]


def test_dlq_drop_says_what_it_needs(capsys):
    """Giving up on dead letters names which ones (or all) and where they are kept, or is
    refused before anything is touched; the other actions take none of it."""
    import pytest

    for argv in (["dlq", "drop", "validation", "--all"],                    # kept where?
                 ["dlq", "drop", "validation", "--to", "x.jsonl"],          # which ones?
                 ["dlq", "drop", "validation", "--all", "--id", "a", "--to", "x.jsonl"],
                 ["dlq", "replay", "validation", "--all"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2, argv
        assert "--to" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["-1", "0", "x"])
def test_a_dead_letter_limit_below_one_is_refused_naming_it(limit, capsys):
    """``--limit -1`` listed "(the first 0 listed)" and ``--limit 0`` meant all, unsaid."""
    from services import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["dlq", "list", "validation", "--limit", limit])
    assert exc.value.code == 2 and f"argument --limit: '{limit}'" in capsys.readouterr().err
