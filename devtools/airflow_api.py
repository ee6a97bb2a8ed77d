"""A small client of the Airflow 3 REST API (``/api/v2``) for tests and benchmarks, with a simple-auth-manager token."""

from __future__ import annotations

from typing import Any


class AirflowApi:
    """A small client of the Airflow 3 REST API (``/api/v2``) with a simple-auth-manager token."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        import httpx

        # Generous: on a loaded 2-core machine the api-server answered a POST after more than 30 s.
        self._client = httpx.Client(base_url=base_url, timeout=120.0)
        self._username, self._password = username, password
        self._token: str | None = None

    def token(self) -> str:
        """A JWT from ``POST /auth/token`` (201 ``{"access_token": ...}``)."""
        response = self._client.post("/auth/token", json={"username": self._username, "password": self._password})
        if response.status_code != 201:
            raise RuntimeError(f"POST /auth/token answered {response.status_code}: {response.text[:500]}")
        return response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``path`` with the token (fetched again once on 401); return the JSON body or raise."""
        for attempt in range(2):
            if self._token is None:
                self._token = self.token()
            response = self._client.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs)
            if response.status_code == 401 and attempt == 0:
                self._token = None
                continue
            if response.status_code >= 400:
                raise ApiError(method, path, response.status_code, response.text)
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body)

    def close(self) -> None:
        self._client.close()


class ApiError(RuntimeError):
    """The Airflow REST API answered with an error status."""

    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{method} {path} answered {status}: {text[:1000]}")
        self.status = status
