"""Who is calling, and what they may do (CONTRACT section 2).

The gateway authenticates a bearer token into a ``Principal`` and passes it,
as a dict, with every RPC. Each service then checks the principal's *scope*
(an org-unit subtree) against its own replica of the hierarchy, so a scope
check never needs another service.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass

ADMIN, OPERATOR, SUPERVISOR, REPORTER = "admin", "operator", "supervisor", "reporter"
# the name the bootstrap token (STATNET_ADMIN_TOKEN) acts under: no user may take it, or
# that user would share the bootstrap's Idempotency-Keys and "own" its returns
BOOTSTRAP_ADMIN = "admin"

# action -> roles allowed to perform it (scope is checked separately)
PERMISSIONS = {
    "metadata.write": {ADMIN},
    "users.write": {ADMIN},
    "focal_points.write": {ADMIN},  # section 3 of the contract: metadata is the admin's; a supervisor reads
    "returns.submit": {ADMIN, REPORTER},
    "deadlines.check": {ADMIN, OPERATOR},
    "notifications.retry": {ADMIN, OPERATOR},
    "history.load": {ADMIN},
    # the state of a load (yearly totals pending): the whole country's, read by those who
    # read everything
    "history.read": {ADMIN, OPERATOR},
    "read": {ADMIN, OPERATOR, SUPERVISOR, REPORTER},
}
DESCRIPTIONS = {
    "metadata.write": "import metadata",
    "users.write": "manage users",
    "focal_points.write": "edit focal points",
    "returns.submit": "submit returns",
    "deadlines.check": "run the deadline check",
    "notifications.retry": "send failed notifications again",
    "history.load": "load history",
    "history.read": "read the state of history loads",
    "read": "read data",
}


class Forbidden(Exception):
    """Acting outside one's role or scope; the message names the action or org unit."""


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    org_unit: str | None  # root of the scope; None: the whole hierarchy
    focal_point: str | None = None

    @property
    def unscoped(self) -> bool:
        """Admins and operators see everything (CONTRACT 2)."""
        return self.role in (ADMIN, OPERATOR) or self.org_unit is None

    def may(self, action: str) -> bool:
        return self.role in PERMISSIONS[action]

    def require(self, action: str) -> None:
        if not self.may(action):
            raise Forbidden(f"user {self.username!r} with role {self.role!r} may not "
                            f"{DESCRIPTIONS[action]}")

    def covers_path(self, path: str | None) -> bool:
        """Is the unit at ``path`` (``/LA/03/0301/``) inside this principal's scope?"""
        if self.unscoped:
            return True
        return path is not None and f"/{self.org_unit}/" in path

    def require_path(self, org_unit: str, path: str | None) -> None:
        if not self.covers_path(path):
            raise Forbidden(f"org unit {org_unit!r} is outside the scope of user "
                            f"{self.username!r} (subtree of {self.org_unit!r})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "Principal":
        return cls(raw["username"], raw["role"], raw.get("org_unit"), raw.get("focal_point"))


def new_token() -> str:
    # never led by "-": given to a command line as `--token TOKEN` it read as an option
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def token_hash(token: str) -> str:
    """Only this is stored: a leaked users table gives no usable token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
