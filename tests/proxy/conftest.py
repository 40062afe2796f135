from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.demo.crm import CRM, create_app
from tests.harness import CRM_RULES, Harness, policy_text, serve_app, started_gateway

UPSTREAM_TOKEN = "upstream-secret"


@pytest.fixture
async def crm() -> AsyncIterator[tuple[CRM, str]]:
    app = create_app(token=UPSTREAM_TOKEN)
    async with serve_app(app) as url:
        yield app, url


@pytest.fixture
async def gw(tmp_path: Path, crm: tuple[CRM, str],
             monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setenv("CRM_TEST_TOKEN", UPSTREAM_TOKEN)
    text = policy_text(crm[1], CRM_RULES, extra="credentials: {header: Authorization, "
                       'value: "Bearer ${CRM_TEST_TOKEN}"}\n')
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}) as harness:
        yield harness
