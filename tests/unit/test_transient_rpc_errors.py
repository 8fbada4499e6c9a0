"""What the edge answers 503 for: a service's passing failure, raised in this process or
named by a ``RemoteError`` from another one; anything else stays an error."""
from __future__ import annotations

import sqlalchemy.exc
from nameko.exceptions import RemoteError

from shared.local import _transient_name


def test_a_lost_database_is_passing_here_and_from_another_process():
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert _transient_name(lost) == "OperationalError"
    assert _transient_name(RemoteError("OperationalError", "connection refused")) == "OperationalError"
    assert _transient_name(RemoteError("InterfaceError", "connection already closed")) == "InterfaceError"


def test_a_fault_is_not():
    assert _transient_name(ValueError("bad")) is None
    assert _transient_name(RemoteError("KeyError", "'x'")) is None
    assert _transient_name(RemoteError("IntegrityError", "duplicate key")) is None
