"""stripe-python, unchanged, through the gateway to localstripe.

The agent sets only the SDK's documented key and API base. Stripe updates a
customer with a form-encoded POST to the item (``metadata[tier]=gold``); the
example policy captures the customer first and undoes with the prior values
of the fields sent (``prior_fields``): the changed key goes back, the added
one is unset the Stripe way (empty string).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import stripe

from tests.harness import AGENT_KEY
from tests.sdk.conftest import UPSTREAM_SECRETS, SdkGateway


def client(base: str, key: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base}, max_network_retries=0)


def direct(localstripe: str, customer_id: str) -> dict[str, Any]:
    response = httpx.get(f"{localstripe}/v1/customers/{customer_id}",
                         auth=(UPSTREAM_SECRETS["STRIPE_API_KEY"], ""))
    assert response.status_code == 200, response.text
    return response.json()


def test_customer_metadata_change_rolls_back(localstripe: str, sdk_gateway: SdkGateway) -> None:
    seeded = client(localstripe, UPSTREAM_SECRETS["STRIPE_API_KEY"]).v1.customers.create(
        {"email": "ada@example.com", "metadata": {"tier": "silver", "region": "eu"}})
    agent = client(f"{sdk_gateway.proxy}/stripe", AGENT_KEY)

    updated = agent.v1.customers.update(seeded.id, {"metadata": {"tier": "gold",
                                                                  "added": "yes"}})
    assert updated.metadata["tier"] == "gold"
    assert direct(localstripe, seeded.id)["metadata"] == {"tier": "gold", "region": "eu",
                                                          "added": "yes"}

    entries = [e for e in sdk_gateway.entries("stripe") if e["path"].endswith(seeded.id)]
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["prior"]["metadata"] == {"tier": "silver", "region": "eu"}
    assert entry["reversible"] is True
    assert entry["undo"]["method"] == "POST"
    assert entry["undo"]["body"] == {"metadata[tier]": "silver", "metadata[added]": ""}

    plan = sdk_gateway.roll_back(entries=[entry["id"]])
    assert [s["status"] for s in plan["steps"]] == ["applied"], plan
    restored = direct(localstripe, seeded.id)["metadata"]
    # Stripe removes a metadata key posted empty; localstripe stores the empty string
    assert restored.get("added", "") == ""
    assert {k: v for k, v in restored.items() if k != "added"} == {"tier": "silver",
                                                                    "region": "eu"}


def test_a_created_customer_is_rolled_back_by_deleting_it(
        localstripe: str, sdk_gateway: SdkGateway) -> None:
    """A customer create is undone by deleting what it created (the answer's id)."""
    agent = client(f"{sdk_gateway.proxy}/stripe", AGENT_KEY)
    created = agent.v1.customers.create({"email": "new@example.com"})
    entry = next(e for e in sdk_gateway.entries("stripe")
                 if e["method"] == "POST" and e["path"] == "/v1/customers"
                 and e["undo"] and e["undo"]["path"].endswith(created.id))
    assert (entry["undo"]["method"], entry["undo"]["path"]) == (
        "DELETE", f"/v1/customers/{created.id}")
    plan = sdk_gateway.roll_back(entries=[entry["id"]])
    assert [s["status"] for s in plan["steps"]] == ["applied"], plan
    gone = httpx.get(f"{localstripe}/v1/customers/{created.id}",
                     auth=(UPSTREAM_SECRETS["STRIPE_API_KEY"], ""))
    assert gone.status_code == 404 or gone.json().get("deleted") is True


def test_a_customer_created_then_updated_rolls_back_done(
        localstripe: str, sdk_gateway: SdkGateway) -> None:
    """The update's compensation leaves the customer as the create left it, give or take
    how Stripe unsets a key; the create's DELETE must not call that a conflict."""
    agent = client(f"{sdk_gateway.proxy}/stripe", AGENT_KEY)
    created = agent.v1.customers.create({"email": "both@example.com"})
    agent.v1.customers.update(created.id, {"email": "changed@example.com",
                                           "metadata": {"tier": "gold"}})
    mine = [e for e in sdk_gateway.entries("stripe")
            if e["path"].endswith(created.id) or (e["undo"] or {}).get("path", "")
            .endswith(created.id)]
    assert sorted(e["method"] for e in mine) == ["POST", "POST"]
    plan = sdk_gateway.roll_back(entries=[e["id"] for e in mine])
    assert plan["status"] == "done", json.dumps(plan["steps"])
    assert [s["method"] for s in plan["steps"]] == ["POST", "DELETE"]
    gone = httpx.get(f"{localstripe}/v1/customers/{created.id}",
                     auth=(UPSTREAM_SECRETS["STRIPE_API_KEY"], ""))
    assert gone.status_code == 404 or gone.json().get("deleted") is True
