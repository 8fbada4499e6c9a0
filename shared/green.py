"""Cooperative I/O for the whole process.

nameko runs on eventlet. Every blocking call must yield to the hub, or one slow
query stalls every worker of every service in the process. ``patch()`` must run
before anything opens a socket: the CLI calls it first thing, and so does the
test suite's conftest (plain pytest no longer lets nameko do it).
"""
import warnings

_patched = False


def patch() -> None:
    global _patched
    if _patched:
        return
    with warnings.catch_warnings():
        # eventlet announces its own deprecation on import (we chose it with nameko);
        # only that message is silenced
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        import eventlet
    eventlet.monkey_patch()
    # psycopg2 is a C extension: without this it blocks the hub on every query
    from psycogreen.eventlet import patch_psycopg
    patch_psycopg()
    _patched = True
