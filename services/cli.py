"""The ``statnet`` command.

    statnet run [SERVICE ...]      run services (all six in one process by default)
    statnet demo                   load Luang Namtha and one month of returns, print the outcome
    statnet migrate [SERVICE ...]  bring database schemas up to date
    statnet user create ...        create a user (or rotate its token) and print the token
    statnet history load FILE --data-set CODE   bulk-load past years (DHIS2 CSV)
    statnet dlq list|replay SERVICE
    statnet dlq drop SERVICE --id ID|--all --to FILE   give up on dead letters, kept in FILE
    statnet status                 services up, queues, outboxes, dead letters, completeness
    statnet topology               print the RabbitMQ definitions of the whole topology
    statnet asyncapi               print the AsyncAPI document of every event
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from shared import green
from shared.config import SERVICES
from shared.migrations import SERVICES_WITH_SCHEMA as SCHEMAS


def _positive(raw: str) -> int:
    """An argument of 1 or more (``--limit -1`` listed "the first 0")."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: give 1 or more")
    return value


def _option_words(parser: argparse.ArgumentParser) -> set[str]:
    """Every option of the parser and of its subcommands, theirs too."""
    words = set()
    for action in parser._actions:
        words |= set(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                words |= _option_words(child)
    return words


def main(argv=None) -> int:
    green.patch()  # before anything opens a socket
    from shared import logs
    from shared.config import ConfigError, Settings

    parser = argparse.ArgumentParser(prog="statnet", description="statnet: statistical reporting network")
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run services (all of them in one process by default)")
    p_run.add_argument("services", nargs="*", help="gateway registry submission validation aggregation notify")

    p_demo = sub.add_parser("demo", help="end-to-end demonstration on the local broker and database")
    p_demo.add_argument("--month", help="period to submit (YYYYMM); default: last month")

    p_mig = sub.add_parser("migrate", help="bring database schemas up to date")
    p_mig.add_argument("services", nargs="*", help=" ".join(SCHEMAS) + " (default: all)")

    p_user = sub.add_parser("user", help="manage users")
    user_sub = p_user.add_subparsers(dest="user_command", required=True)
    p_create = user_sub.add_parser("create", help="create a user or rotate its token; prints the token")
    p_create.add_argument("--username", required=True)
    p_create.add_argument("--role", required=True, choices=["admin", "operator", "supervisor", "reporter"])
    p_create.add_argument("--org-unit")
    p_create.add_argument("--focal-point")

    p_dlq = sub.add_parser("dlq", help="inspect, replay or drop a service's dead-letter queue")
    p_dlq.add_argument("action", choices=["list", "replay", "drop"],
                       help="list: show the dead letters and why each failed; replay: send them back "
                            "to their queue; drop: give up chosen ones for good (kept in --to)")
    p_dlq.add_argument("service", choices=SERVICES)
    p_dlq.add_argument("--limit", type=_positive, metavar="N",
                       help="list or replay at most N (default: list 1000, replay all)")
    p_dlq.add_argument("--id", action="append", dest="ids", metavar="ID",
                       help="drop: the dead letter of this id, as list shows it (repeatable)")
    p_dlq.add_argument("--all", action="store_true", help="drop: every dead letter now in the queue")
    p_dlq.add_argument("--to", metavar="FILE",
                       help="drop: where the dropped messages are kept (JSON lines, appended)")

    p_hist = sub.add_parser("history", help="bulk-load past years")
    hist_sub = p_hist.add_subparsers(dest="history_command", required=True)
    p_load = hist_sub.add_parser("load", help="load a DHIS2 CSV file through POST /api/history")
    p_load.add_argument("file")
    p_load.add_argument("--data-set", required=True)
    p_load.add_argument("--url", help="base URL (default http://$STATNET_HTTP)")
    p_load.add_argument("--token", help="admin token (default $STATNET_ADMIN_TOKEN)")

    sub.add_parser("status", help="services up, queue depths, outboxes, dead letters, completeness "
                                  "(exit 0 healthy, 1 unwell)")
    sub.add_parser("topology", help="print RabbitMQ definitions of the topology")
    sub.add_parser("asyncapi", help="print the AsyncAPI document of the events")

    # a token led by "-" (tokens issued before they never were) is the value of --token,
    # not an option argparse does not know
    options = _option_words(parser)
    given, argv = list(sys.argv[1:] if argv is None else argv), []
    while given:
        word = given.pop(0)
        if word == "--token" and given and given[0].startswith("-") and given[0].split("=")[0] not in options:
            word = f"--token={given.pop(0)}"  # (a missing token before another option stays argparse's error)
        argv.append(word)
    args = parser.parse_args(argv)
    # wrong usage is one line and exit 2, as argparse says it, never a traceback later
    if args.command == "migrate" and set(args.services) - set(SCHEMAS):
        p_mig.error(f"unknown schema(s): {', '.join(sorted(set(args.services) - set(SCHEMAS)))}; "
                    f"choose from {', '.join(SCHEMAS)} (the gateway has none)")
    if args.command == "dlq":
        if args.action == "drop" and (not args.to or bool(args.ids) == args.all):
            p_dlq.error("drop needs --to FILE, and --id ID (repeatable) or --all")
        if args.action != "drop" and (args.ids or args.all or args.to):
            p_dlq.error("--id, --all and --to are for drop")
    if args.command == "demo" and args.month is not None:
        from shared.periods import MONTHLY, Period, PeriodError

        try:
            if Period.parse(args.month).type != MONTHLY:
                raise PeriodError(f"{args.month!r} is not a month")
        except PeriodError as exc:
            p_demo.error(f"--month: {exc} (give YYYYMM, e.g. 202610)")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"statnet: {exc}", file=sys.stderr)
        return 2
    # the demo's output is its report: only warnings and errors go to the log
    quiet = args.command in ("demo", "status")
    logs.configure(settings.log_format, level=logging.WARNING if quiet else logging.INFO)
    if args.command in ("migrate", "user"):
        down = unreachable(settings, needs=("database",))  # schemas and users are the database's alone
    elif args.command in ("run", "demo"):
        down = unreachable(settings)
        serves_http = args.command == "demo" or (args.command == "run" and (
            not args.services or "gateway" in args.services))
        taken = http_address_taken(settings) if serves_http else None
        down += [taken] if taken else []
    elif args.command == "dlq":
        down = unreachable(settings, needs=("broker",))
    else:
        down = []
    if down:
        print("\n".join(f"statnet: {problem}" for problem in down), file=sys.stderr)
        return 2

    if args.command == "run":
        from services import runner

        try:
            runner.run(settings, tuple(args.services) or runner.ALL)
        except ConfigError as exc:  # found at start: the broker's queues set up otherwise
            print(f"statnet: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "demo":
        from services import demo

        return demo.main(settings, month=args.month)
    if args.command == "migrate":
        from services.runner import prepare
        from shared import migrations

        # as at a service's start: the queues first (the events a revision emits, aggregation
        # 0016's, must find every consumer's queue), then the schemas
        done = prepare(settings, args.services or migrations.SERVICES_WITH_SCHEMA)
        for name, (before, after) in done.items():
            # what an upgrade did, for the operator's record (it said "up to date" either way)
            print(f"{name}: up to date at {after}" if before == after
                  else f"{name}: {before or 'new schema'} -> {after}")
        return 0
    if args.command == "user":
        return _create_user(settings, args)
    if args.command == "status":
        from services import status

        return status.main(settings)
    if args.command == "dlq":
        from shared import topology

        if args.action == "list":
            items, waiting = topology.dlq_list(settings, args.service, limit=args.limit or 1000)
            for item in items:
                print(json.dumps(item, ensure_ascii=False))
            sys.stdout.flush()  # the messages before their count, also where both go to one file
            shown = "" if len(items) == waiting else f" (the first {len(items)} listed)"
            print(f"{waiting} message(s) in {topology.dlq_name(args.service)}{shown}", file=sys.stderr)
            return 0
        if args.action == "drop":
            return _drop_dead_letters(settings, args)
        moved, left = topology.dlq_replay(settings, args.service, limit=args.limit)
        print(f"replayed {moved} message(s) from {topology.dlq_name(args.service)}")
        for why in left:
            print(f"left in place: {why}", file=sys.stderr)
        return 1 if left else 0
    if args.command == "history":
        from services import history_cli

        token = args.token or settings.admin_token
        if not token:
            print("statnet: an admin token is needed (--token or STATNET_ADMIN_TOKEN)", file=sys.stderr)
            return 2
        return history_cli.load(args.url or f"http://{settings.http_address}", token, args.file, args.data_set)
    if args.command == "topology":
        from services.runner import service_classes
        from shared import topology

        print(json.dumps(topology.definitions(service_classes().values(), settings), indent=2))
        return 0
    if args.command == "asyncapi":
        from shared import asyncapi
        from services.runner import service_classes

        print(asyncapi.document(service_classes().values()), end="")
        return 0
    return 1


def unreachable(settings, timeout: float = 5.0, needs=("database", "broker")) -> list[str]:
    """The broker and the database, each named with its address if nothing answers there.
    Found later, a refused connection surfaced as a long traceback naming neither."""
    import socket

    from kombu import Connection
    from sqlalchemy.engine import make_url

    from shared.db import sqlalchemy_url

    database = make_url(sqlalchemy_url(settings.database_url))
    database_shown = make_url(settings.database_url).render_as_string(hide_password=True)
    broker = Connection(settings.amqp_uri)
    problems = []
    for what, setting, host, port, shown in (
            ("database", "DATABASE_URL", database.host or "127.0.0.1", database.port or 5432,
             database_shown),
            ("broker", "AMQP_URI", broker.hostname or "127.0.0.1", broker.port or 5672,
             broker.as_uri(include_password=False))):
        if what not in needs:
            continue
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            problems.append(f"the {what} at {host}:{port} is unreachable ({exc.strerror or exc}); "
                            f"is it running? ({setting}={shown})")
            continue
        # it answers: now log in as statnet will (a wrong password, vhost or role was a
        # traceback from deep inside the first service to connect)
        refused = _login_refused(settings, what, timeout, database)
        if refused:
            problems.append(f"the {what} at {host}:{port} refused statnet: {refused} ({setting}={shown})")
    return problems


def _login_refused(settings, what: str, timeout: float, url) -> str | None:
    """Why the broker or the database (``url``, as ``unreachable`` parsed it) refuses
    statnet's login; None when it lets statnet in."""
    if what == "broker":
        from kombu import Connection

        try:
            with Connection(settings.amqp_uri, connect_timeout=timeout) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:  # AccessRefused, NotAllowed (no such vhost), ...
            return " ".join(str(exc).split()) or type(exc).__name__
        return None
    import psycopg2

    try:
        psycopg2.connect(host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username,
                         password=url.password, dbname=url.database, connect_timeout=int(timeout)).close()
    except psycopg2.OperationalError as exc:
        message = " ".join(str(exc).split())
        if f'database "{url.database}" does not exist' in message:
            return None  # statnet creates it
        return message
    return None


def http_address_taken(settings) -> str | None:
    """Another process listening at STATNET_HTTP: nameko's server binds with SO_REUSEPORT,
    so a second statnet would start and the kernel split requests between the two."""
    import errno
    import socket

    host, _, port = settings.http_address.rpartition(":")
    probe = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
    try:
        probe.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (f"the HTTP address {settings.http_address} is already in use (another statnet?); "
                    f"stop it or set STATNET_HTTP")
        return None  # anything else is the server's to report
    finally:
        probe.close()
    return None


def _create_user(settings, args) -> int:
    """Straight into the registry's schema and outbox: works with the services stopped."""
    from marshmallow import ValidationError

    from services.registry import tables
    from services.registry.service import upsert_user
    from shared import local, migrations
    from shared.db import engine_for
    from shared.delivery import Tx

    migrations.upgrade(settings, "registry")

    body = {"username": args.username, "role": args.role, "orgUnit": args.org_unit,
            "focalPoint": args.focal_point}
    try:
        with engine_for(settings.database_url).begin() as conn:
            user = upsert_user(Tx(conn, "registry", tables.outbox), body)
    except ValidationError as exc:
        for field, messages in exc.normalized_messages().items():
            for message in messages if isinstance(messages, list) else [messages]:
                flag = {"orgUnit": "--org-unit", "focalPoint": "--focal-point"}.get(field, f"--{field}")
                print(f"statnet: {flag}: {message}", file=sys.stderr)
        return 2
    print(json.dumps(user, ensure_ascii=False))
    if not local.running(settings, "registry"):
        # its outbox relay sends user_changed: until it does, a gateway that confirmed the
        # user's previous token may still take it while the registry can't be asked
        print("statnet: the registry service is not running: the gateways hear of this user when it "
              "starts (a token this replaced may be taken until then)", file=sys.stderr)
    return 0


def _drop_dead_letters(settings, args) -> int:
    """``statnet dlq drop``: exit 1 when an id asked for was not in the queue (a typo, or
    dropped already), having dropped the others."""
    from shared import topology

    try:
        archive = open(args.to, "a", encoding="utf-8")
    except OSError as exc:
        print(f"statnet: --to {args.to}: {exc.strerror}", file=sys.stderr)
        return 2
    with archive:
        dropped, missing = topology.dlq_drop(settings, args.service, None if args.all else set(args.ids), archive)
    print(f"dropped {dropped} message(s) from {topology.dlq_name(args.service)}, kept in {args.to}")
    for missing_id in sorted(missing):
        print(f"not in the queue: {missing_id}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
