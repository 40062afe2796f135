"""Issue 10: a second ``gateway rollback --run run-1 --apply`` reported a conflict on the
entry the first one had already compensated. Real CRM, real ``gateway serve``, the real CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.e2e.procs import GATEWAY, start_crm, start_gateway, write_settings
from tests.harness import AGENT_KEY, CRM_RULES, TOKENS, policy_text

AGENT = {"X-Gateway-Key": AGENT_KEY, "X-Agent-Run": "run-1"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}


def cli(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_TOKEN": TOKENS["admin"], "GATEWAY_ADMIN_URL": admin}
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=60, env=env)


def test_a_second_rollback_skips_what_the_first_undid(tmp_path: Path) -> None:
    crm = start_crm()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(
        policy_text(crm.urls[0], CRM_RULES, extra="volatile: [updated_at]\n"))
    gateway = start_gateway(write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db"))
    proxy, admin = gateway.urls
    try:
        for body in ({"plan": "free"}, {"balance": 0}):
            assert httpx.patch(f"{proxy}/crm/customers/cus_1", json=body,
                               headers=AGENT).status_code == 200

        first = cli(admin, "rollback", "--run", "run-1", "--apply")
        assert first.returncode == 0, first.stdout + first.stderr
        customer = httpx.get(f"{crm.urls[0]}/customers/cus_1").json()
        assert (customer["plan"], customer["balance"]) == ("pro", 1200)
        plan_id = next(line.split()[-1] for line in first.stdout.splitlines()
                       if line.startswith("plan"))
        entries = httpx.get(f"{admin}/v1/journal", params={"run": "run-1"},
                            headers=ADMIN).json()["items"]
        assert [(e["state"], e["rolled_back_plan"]) for e in entries] == \
            [("rolled_back", plan_id)] * 2

        second = cli(admin, "rollback", "--run", "run-1", "--apply")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "conflicts: none" in second.stdout
        assert second.stdout.count(f"already rolled back by plan {plan_id}") == 2
        requests = httpx.get(f"{crm.urls[0]}/_demo/requests").json()["items"]
        assert [r["method"] for r in requests].count("PUT") == 2  # the first plan's two only
    finally:
        gateway.stop()
        crm.stop()
