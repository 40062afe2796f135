"""A real ``gateway serve`` (SQLite and PostgreSQL: ``store_url``) in front of a
``FaultyUpstream``; ``launch(rules, **settings)`` starts it and returns the agent and
admin clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateway, write_settings
from tests.faults.upstream import FaultyUpstream
from tests.harness import AGENT_KEY, TOKENS, policy_text

ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}

RULES = """
- id: read
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit
  match: {methods: [PUT, PATCH, DELETE], path: "/customers/{id}"}
  action: allow
- id: create
  match: {methods: [POST], path: "/customers"}
  action: allow
"""


class Gateway:
    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        proxy, admin = proc.urls
        self.agent = httpx.Client(base_url=f"{proxy}/crm", timeout=30,
                                  headers={"X-Gateway-Key": AGENT_KEY})
        self.admin = httpx.Client(base_url=admin, timeout=60, headers=ADMIN)

    def journal(self, **params: Any) -> list[dict[str, Any]]:
        response = self.admin.get("/v1/journal", params=params)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    def rollback(self, **body: Any) -> dict[str, Any]:
        response = self.admin.post("/v1/rollback", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json()["plan"])

    def close(self) -> None:
        self.agent.close()
        self.admin.close()
        self.proc.stop()


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as started:
        yield started


@pytest.fixture
def launch(tmp_path: Path, store_url: str,
           upstream: FaultyUpstream) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def launch(rules: str = RULES, extra: str = "", **settings: Any) -> Gateway:
        (tmp_path / "policies").mkdir(exist_ok=True)
        (tmp_path / "policies" / "crm.yaml").write_text(
            policy_text(upstream.url, rules, extra=extra))
        gateway = Gateway(start_gateway(write_settings(tmp_path, store_url, **settings)))
        started.append(gateway)
        return gateway

    yield launch
    for gateway in started:
        gateway.close()
