"""The built product as users run it: real processes, real sockets, both stores."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, run_gateway, start_crm, start_gateway, write_settings
from tests.harness import AGENT_KEY, CRM_RULES, TOKENS, policy_text

AGENT = {"X-Gateway-Key": AGENT_KEY}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}


@pytest.fixture
def crm() -> Iterator[Proc]:
    proc = start_crm(token="e2e-upstream-token")
    yield proc
    proc.stop()


@pytest.fixture
def config(tmp_path: Path, store_url: str, crm: Proc) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(
        crm.urls[0], CRM_RULES,
        extra='credentials: {header: Authorization, value: "Bearer ${E2E_CRM_TOKEN}"}\n'))
    return write_settings(tmp_path, store_url)


ENV = {"E2E_CRM_TOKEN": "e2e-upstream-token"}


def upstream_calls(crm: Proc) -> list[tuple[str, str]]:
    log = httpx.get(f"{crm.urls[0]}/_demo/requests").json()["items"]
    return [(c["method"], c["path"]) for c in log]


def test_read_write_journal_and_freeze_survive_a_restart(config: Path, crm: Proc) -> None:
    gateway = start_gateway(config, env=ENV)
    proxy, admin = gateway.urls
    try:
        read = httpx.get(f"{proxy}/crm/customers/cus_1", headers=AGENT)
        assert read.status_code == 200 and read.headers["x-gateway-decision"] == "allow"
        write = httpx.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "gold"},
                            headers={**AGENT, "X-Agent-Run": "e2e"})
        assert write.status_code == 200
        assert upstream_calls(crm)[-2:] == [("GET", "/customers/cus_1"),
                                            ("PATCH", "/customers/cus_1")]
        [entry] = httpx.get(f"{admin}/v1/journal", params={"run": "e2e"},
                            headers=ADMIN).json()["items"]
        assert entry["prior"]["plan"] == "pro" and entry["status"] == 200
        engaged = httpx.post(f"{admin}/v1/killswitch/engage", json={"reason": "incident 7"},
                             headers=ADMIN)
        assert engaged.status_code == 200
    finally:
        assert gateway.stop() == 0
    gateway = start_gateway(config, env=ENV)
    proxy, admin = gateway.urls
    try:
        frozen = httpx.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "x"}, headers=AGENT)
        assert frozen.status_code == 423
        assert frozen.json()["error"]["code"] == "writes_frozen"
        state = httpx.get(f"{admin}/v1/killswitch", headers=ADMIN).json()
        assert state["engaged"] and state["freezes"][0]["reason"] == "incident 7"
        httpx.post(f"{admin}/v1/killswitch/release", json={"reason": "over"}, headers=ADMIN)
        again = httpx.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "x"}, headers=AGENT)
        assert again.status_code == 200
        assert httpx.get(f"{admin}/v1/health").json()["store"] is True
    finally:
        gateway.stop()


def test_writes_racing_an_engage_never_land_after_it(config: Path, crm: Proc) -> None:
    gateway = start_gateway(config, env=ENV)
    proxy, admin = gateway.urls

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(headers=AGENT, timeout=30) as client:
            async def writer(i: int) -> list[int]:
                statuses = []
                for n in range(15):
                    r = await client.patch(f"{proxy}/crm/customers/cus_{1 + i % 3}",
                                           json={"plan": f"{i}-{n}"})
                    statuses.append(r.status_code)
                return statuses

            async def engage() -> None:
                await client.get(f"{proxy}/crm/customers", headers=AGENT)  # let writes start
                r = await client.post(f"{admin}/v1/killswitch/engage", json={"reason": "race"},
                                      headers=ADMIN)
                assert r.status_code == 200
                # straight to the upstream: everything logged after this came after engage
                await client.get(f"{crm.urls[0]}/deals/marker-after-engage")

            results = await asyncio.gather(*(writer(i) for i in range(8)), engage())
            return [s for statuses in results[:-1] for s in statuses]

    try:
        statuses = asyncio.run(scenario())
    finally:
        gateway.stop()
    assert set(statuses) <= {200, 423} and 423 in statuses
    calls = upstream_calls(crm)
    marker = calls.index(("GET", "/deals/marker-after-engage"))
    assert [c for c in calls[marker + 1:] if c[0] != "GET" or "customers/" in c[1]] == []
    assert sum(1 for c in calls if c[0] == "PATCH") == statuses.count(200)


def test_sighup_reloads_and_keeps_the_last_good_set(config: Path, crm: Proc) -> None:
    gateway = start_gateway(config, env=ENV)
    proxy, _ = gateway.urls
    policy = config.parent / "policies" / "crm.yaml"
    try:
        first = httpx.get(f"{proxy}/_gateway/health").json()["policy_revision"]
        policy.write_text(policy.read_text().replace("default: deny", "default: allow"))
        gateway.proc.send_signal(signal.SIGHUP)
        assert _revision_changes(proxy, first)
        second = httpx.get(f"{proxy}/_gateway/health").json()["policy_revision"]
        policy.write_text("upstream: crm\nrules: [\n")
        gateway.proc.send_signal(signal.SIGHUP)
        assert httpx.get(f"{proxy}/crm/customers", headers=AGENT).status_code == 200
        assert httpx.get(f"{proxy}/_gateway/health").json()["policy_revision"] == second
    finally:
        gateway.stop()


def _revision_changes(proxy: str, old: str) -> bool:
    for _ in range(500):  # bounded poll on the observable condition
        if httpx.get(f"{proxy}/_gateway/health").json()["policy_revision"] != old:
            return True
    return False


def test_serve_refuses_an_invalid_policy_set(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "bad.yaml").write_text(
        "upstream: crm\nbase_url: http://127.0.0.1:1\nrules:\n  - id: a\n    action: maybe\n")
    config = write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db")
    result = run_gateway("serve", "--config", str(config))
    assert result.returncode == 1
    assert "bad.yaml:5: rule 'a': rules.0.action: unknown action 'maybe'" in result.stderr
    check = run_gateway("policy", "check", str(tmp_path / "policies"))
    assert check.returncode == 1 and "bad.yaml:5:" in check.stdout


def test_serve_refuses_without_operators_unless_dev(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text("http://127.0.0.1:9", "[]"))
    config = write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db", operators=[])
    refused = run_gateway("serve", "--config", str(config))
    assert refused.returncode == 1 and "no operators" in refused.stderr
    dev = start_gateway(config, "--dev")
    try:
        token = next(line.split("=", 1)[1].strip() for line in dev.output
                     if "GATEWAY_TOKEN=" in line)
        admin = dev.urls[1]
        assert httpx.get(f"{admin}/v1/killswitch",
                         headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(f"{admin}/v1/killswitch",
                         headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        dev.stop()


def test_policy_check_accepts_the_shipped_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STRIPE_API_KEY", "GITHUB_TOKEN", "HUBSPOT_ACCESS_TOKEN", "ZENDESK_OAUTH_TOKEN",
                 "OPENAI_API_KEY", "SLACK_BOT_TOKEN", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY"):  # the examples' ${VAR}s: unset ones are problems
        monkeypatch.setenv(name, "x")
    root = Path(__file__).resolve().parents[2] / "policies"
    for directory in (root, root / "examples"):
        result = run_gateway("policy", "check", str(directory))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1].startswith("ok: ")
