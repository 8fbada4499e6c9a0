"""A client of the public HTTP API, as an acceptance test would use it."""
from __future__ import annotations

import time

import requests


class Api:
    def __init__(self, base: str, token: str | None = None):
        self.base = base.rstrip("/")
        self.token = token
        self.http = requests.Session()

    def as_user(self, token: str) -> "Api":
        return Api(self.base, token)

    def request(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {}) or {}
        token = token or self.token
        if token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.base + path, headers=headers, timeout=60, **kwargs)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # --- conveniences -------------------------------------------------------------

    def import_metadata(self, doc: dict) -> dict:
        r = self.post("/api/metadata", json=doc)
        assert r.status_code == 200, r.text
        return r.json()

    def create_user(self, username: str, role: str, org_unit: str | None) -> str:
        r = self.post("/api/users", json={"username": username, "role": role, "orgUnit": org_unit})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def submit(self, body, token: str | None = None, content_type: str = "application/json",
               **kw) -> requests.Response:
        if isinstance(body, (dict, list)):
            return self.post("/api/dataValueSets", json=body, token=token, **kw)
        return self.post("/api/dataValueSets", data=body, token=token,
                         headers={"Content-Type": content_type, **kw.pop("headers", {})}, **kw)

    def wait_status(self, return_id: str, statuses=("AGGREGATED", "REJECTED"), timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/api/submissions/{return_id}")
            if r.status_code == 503 and "Retry-After" in r.headers and time.monotonic() < deadline:
                # as a client is told to: a pooled connection the database dropped less than
                # a second ago fails its first statement once (shared.db._ping_when_idle)
                time.sleep(min(float(r.headers["Retry-After"]), 1.0))
                continue
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"return {return_id} still {body['status']} after {timeout}s")
            time.sleep(0.05)

    def analytics(self, dx: str, ou: str, pe: str, token: str | None = None) -> dict:
        r = self.get(f"/api/analytics?dx={dx}&ou={ou}&pe={pe}", token=token)
        assert r.status_code == 200, r.text
        return {(row["dx"], row["ou"], row["pe"]): row["value"] for row in r.json()["rows"]}


def wait_until(predicate, timeout: float = 30, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        time.sleep(interval)
