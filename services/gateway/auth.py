"""Bearer tokens to principals (CONTRACT 2).

The bootstrap admin token comes from ``STATNET_ADMIN_TOKEN``; every other
token is looked up by its SHA-256 in the registry. Lookups are cached for a
few seconds: a token rotated through this gateway is dropped at once, and
``registry.user_changed`` drops it in every gateway (what the registry confirmed
before the change: a token of the change itself, confirmed while its event was on
the way, stays); the TTL bounds what a lost event could leave behind. While the
registry is down, a token it confirmed within the hour still stands: intake goes
on through a registry restart.
"""
from __future__ import annotations

import datetime as dt
import time

from nameko.extensions import DependencyProvider

from services.gateway.http import MISSING_TOKEN, REFUSED_TOKENS, UNKNOWN_TOKEN, HttpError, bearer_token
from shared.auth import ADMIN, BOOTSTRAP_ADMIN, Principal, same_secret, token_hash
from shared.config import Settings

CACHE_SECONDS = 5.0
# while the registry can't be asked, a token it confirmed within this long still stands, so
# that district systems go on submitting through a registry restart (a rotation reaches the
# gateway as user_changed and drops the old token all the same)
STALE_SECONDS = 3600.0


class Authenticator(DependencyProvider):
    def setup(self):
        self.settings = Settings.of(self.container)
        # token hash -> (fresh until, principal, the user's change the registry answered as of)
        self.cache: dict[str, tuple[float, Principal, dt.datetime | None]] = {}
        # each user's latest change heard of: an answer as of an earlier one is not kept (a
        # lookup of the old token that was under way when the rotation's event came)
        self.changed: dict[str, dt.datetime] = {}

    def forget_user(self, username: str, changed_at: dt.datetime | None = None) -> None:
        """Drop the user's tokens confirmed before ``changed_at`` (all without it). A token
        the change made, confirmed while its event was on the way, is kept: dropped, a
        user created just before the registry stopped was refused until it came back."""
        if changed_at is not None:
            self.changed[username] = max(changed_at, self.changed.get(username, changed_at))
        for key, (_, principal, as_of) in list(self.cache.items()):
            if principal.username == username and (changed_at is None or as_of is None or as_of < changed_at):
                self.cache.pop(key, None)

    def get_dependency(self, worker_ctx):
        return _Auth(self)


class _Auth:
    def __init__(self, provider: Authenticator):
        self.provider = provider

    def principal(self, request, lookup) -> Principal:
        """The caller; 401 without a known token. ``lookup(hash)`` asks the registry."""
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            raise HttpError(401, MISSING_TOKEN)
        admin_token = self.provider.settings.admin_token
        if admin_token and same_secret(token, admin_token):
            return Principal(BOOTSTRAP_ADMIN, ADMIN, None)
        key = token_hash(token)
        cached = self.provider.cache.get(key)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        try:
            found = lookup(key)
        except HttpError as exc:
            if exc.status == 503 and cached and cached[0] - CACHE_SECONDS + STALE_SECONDS > now:
                return cached[1]
            raise
        if not found:
            self.provider.cache.pop(key, None)
            REFUSED_TOKENS.remember(key)  # its next upload is refused unread
            raise HttpError(401, UNKNOWN_TOKEN)
        principal = Principal.from_dict(found)
        as_of = found.get("changed_at")  # absent from a registry before it
        as_of = as_of and dt.datetime.fromisoformat(as_of)
        if as_of is None or as_of >= self.provider.changed.get(principal.username, as_of):
            self.provider.cache[key] = (now + CACHE_SECONDS, principal, as_of)
        return principal

    def forget_user(self, username: str, changed_at: dt.datetime | None = None) -> None:
        self.provider.forget_user(username, changed_at)
