"""The admin API as the operator commands see it: URL, token, calls, errors."""

from __future__ import annotations

import argparse
import os
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.errors import OperatorError
from gateway.operator.tables import clean

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"
TOKEN_ENV = "GATEWAY_TOKEN"
ADMIN_URL_ENV = "GATEWAY_ADMIN_URL"
# an approve executes the held call (capture + forward), so allow the upstream time to answer
TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def admin_url(args: argparse.Namespace) -> str:
    url = (args.admin_url or os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OperatorError(2, f"gateway: invalid admin URL {url!r} (expected http://HOST:PORT)")
    return url


def token() -> str:
    value = os.environ.get(TOKEN_ENV, "").strip()
    if not value:
        raise OperatorError(2, f"gateway: {TOKEN_ENV} is not set; export an operator token "
                               f"(one whose sha256 is in the settings' operators) as {TOKEN_ENV}")
    return value


class AdminClient:
    """Synchronous calls to the admin API; failures become ``OperatorError``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=TIMEOUT,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Accept": "application/json"})

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None, timeout: httpx.Timeout | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, path, params=params, json=body,
                                         timeout=timeout or httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException:
            hint = "" if method == "GET" else "; the outcome is unknown, check before retrying"
            raise OperatorError(2, f"gateway: the admin API at {self.url} did not answer "
                                   f"{method} {path} in time{hint}") from None
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise OperatorError(2, f"gateway: cannot reach the admin API at {self.url}: "
                                   f"{exc or type(exc).__name__} (is `gateway serve` running? "
                                   f"set --admin-url or {ADMIN_URL_ENV})") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_error:
            raise OperatorError(1, _api_error(response, data))
        if data is None:
            raise OperatorError(1, f"error: bad_response: {method} {self.url}{path} answered "
                                   f"{response.status_code} without JSON; is this the admin listener?")
        return data


def _api_error(response: httpx.Response, data: Any) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and "code" in error:
        return clean(f"error: {error['code']}: {error.get('message', '')}")
    text = response.text.strip()[:200] or response.reason_phrase
    return clean(f"error: http_{response.status_code}: {text}")
