"""Tokens to principals at the edge, through a registry that may be down."""
import datetime as dt
import time
from types import SimpleNamespace

import pytest

from services.gateway import auth
from services.gateway.http import HttpError


class _Request:
    headers = {"Authorization": "Bearer district-token"}


def _auth():
    provider = SimpleNamespace(settings=SimpleNamespace(admin_token="boot"), cache={}, changed={})
    return auth._Auth(provider)


def test_a_confirmed_token_stands_while_the_registry_is_down_but_not_for_ever(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    a = _auth()
    asked = []

    def registry_up(key):
        asked.append(key)
        return {"username": "namtha", "role": "reporter", "org_unit": "0301"}

    def registry_down(key):
        raise HttpError(503, "the registry service is not running")

    assert a.principal(_Request(), registry_up).username == "namtha"
    clock[0] += auth.CACHE_SECONDS + 1                       # past the cache: asked again, and down
    assert a.principal(_Request(), registry_down).username == "namtha"
    clock[0] += auth.STALE_SECONDS                           # an hour on: no longer vouched for
    with pytest.raises(HttpError) as down:
        a.principal(_Request(), registry_down)
    assert down.value.status == 503
    # a token the registry says is unknown is never served from before
    a2 = _auth()
    assert a2.principal(_Request(), registry_up).username == "namtha"
    clock[0] += auth.CACHE_SECONDS + 1
    with pytest.raises(HttpError) as rotated:
        a2.principal(_Request(), lambda key: None)
    assert rotated.value.status == 401
    with pytest.raises(HttpError) as still:
        a2.principal(_Request(), registry_down)
    assert still.value.status == 503


def test_a_users_change_drops_what_was_confirmed_before_it_not_the_token_it_made(monkeypatch):
    """A user created, then its first upload at once: the gateway confirmed the new token
    with the registry before the creation's user_changed arrived, and the event dropped it;
    the registry stopping next refused the user a token it had just been given (seen in CI)."""
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    a = _auth()
    created = dt.datetime(2026, 11, 29, 17, 0, 5, 123456, tzinfo=dt.timezone.utc)

    def registry_up(key):
        return {"username": "namtha", "role": "reporter", "org_unit": "0301", "changed_at": created.isoformat()}

    def registry_down(key):
        raise HttpError(503, "the registry service is not running")

    assert a.principal(_Request(), registry_up).username == "namtha"
    forget = auth.Authenticator.forget_user.__get__(a.provider)
    forget("namtha", created)  # the creation's own event, late: the token is of it
    clock[0] += auth.CACHE_SECONDS + 1
    assert a.principal(_Request(), registry_down).username == "namtha"
    forget("namtha", created + dt.timedelta(microseconds=1))  # a rotation after: dropped
    with pytest.raises(HttpError) as rotated:
        a.principal(_Request(), registry_down)
    assert rotated.value.status == 503
    # an event from a registry before changed_at was sent drops every token of the user
    assert a.principal(_Request(), registry_up).username == "namtha"
    forget("namtha", None)
    assert a.provider.cache == {}
    # a lookup of the old token under way when the rotation's event came: answered, not kept
    a.principal(_Request(), registry_up)
    assert a.provider.cache == {}
    clock[0] += auth.CACHE_SECONDS + 1
    with pytest.raises(HttpError):
        a.principal(_Request(), registry_down)


def test_the_tokens_refused_are_kept_for_a_while_and_never_without_bound(monkeypatch):
    from services.gateway import http

    refused = http._RefusedTokens()
    refused.MOST = 100
    for n in range(1000):  # a flood of made-up tokens
        refused.remember(f"h{n}")
    assert len(refused._until) <= 100 and refused.holds("h999") and not refused.holds("h0")
    later = time.monotonic() + refused.SECONDS + 1
    monkeypatch.setattr(http.time, "monotonic", lambda: later)
    assert not refused.holds("h999")
