"""Log lines: a client's refused request is told in one INFO line, statnet's own errors
keep their level and traceback."""
import logging

from services.gateway.http import HttpError
from shared.logs import ClientErrorFilter


def _record(exc: Exception) -> logging.LogRecord:
    try:
        raise exc
    except Exception as raised:
        import sys

        return logging.LogRecord("nameko.containers", logging.ERROR, __file__, 1,
                                 "error handling worker %s: %s", ("ctx", raised), sys.exc_info())


def test_a_401_is_one_info_line_without_traceback():
    record = _record(HttpError(401, "unknown or rotated token"))
    assert ClientErrorFilter().filter(record)
    assert record.levelname == "INFO" and record.exc_info is None
    assert record.getMessage() == "request refused (401): unknown or rotated token"


def test_statnets_own_errors_keep_their_level_and_traceback():
    for exc in (RuntimeError("boom"), HttpError(503, "database unavailable")):
        record = _record(exc)
        assert ClientErrorFilter().filter(record)
        assert record.levelname == "ERROR" and record.exc_info is not None


def test_a_text_line_says_its_time_in_utc_with_the_offset():
    """The machine's zone with no offset was logging's default: beside an API time in
    +07:00 an operator could not tell which zone a line was in."""
    from shared.logs import TextFormatter

    record = logging.LogRecord("statnet", logging.INFO, __file__, 1, "ສະບາຍດີ", (), None)
    record.created = 1795862096.25   # 2026-11-28 10:34:56.250 UTC
    record.correlation_id = "c1"
    assert TextFormatter().format(record) == "2026-11-28T10:34:56.250+00:00 INFO statnet [c1] ສະບາຍດີ"
