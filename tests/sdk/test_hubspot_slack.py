"""hubspot-api-client and slack_sdk, unchanged, through the gateway to the recording server.

Each SDK is given only its key and its base URL (HubSpot's ``host``, Slack's
``base_url``). HubSpot updates a contact with PATCH (captured by default,
undone with the prior ``properties``); Slack's ``users.profile.set`` is an RPC
POST whose example rule captures ``users.profile.get`` and sets the prior
profile back.
"""

from __future__ import annotations

import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import SimplePublicObjectInput
from slack_sdk import WebClient

from tests.harness import AGENT_KEY
from tests.sdk.conftest import SdkGateway, agent_key_nowhere
from tests.sdk.recorder import Recorder

CONTACT = "/hubspot/crm/v3/objects/contacts/501"
PROFILE = {"status_text": "Focusing", "status_emoji": ":headphones:", "title": "Support"}


@pytest.fixture(scope="module", autouse=True)
def seeded(recorder: Recorder) -> None:
    recorder.seed({
        CONTACT: {"id": "501", "archived": False, "createdAt": "2026-01-01T00:00:00Z",
                  "updatedAt": "2026-01-02T00:00:00Z",
                  "properties": {"email": "ada@example.com", "lifecyclestage": "lead",
                                 "firstname": "Ada", "hs_object_id": "501",
                                 "createdate": "2026-01-01T00:00:00Z"}},
        "/slack/profile": dict(PROFILE),
    })


def test_hubspot_contact_update_rolls_back(recorder: Recorder, sdk_gateway: SdkGateway) -> None:
    since = len(recorder.seen)
    api = HubSpot(access_token=AGENT_KEY, host=f"{sdk_gateway.proxy}/hubspot")
    updated = api.crm.contacts.basic_api.update(
        contact_id="501", simple_public_object_input=SimplePublicObjectInput(
            properties={"lifecyclestage": "customer"}))
    assert updated.properties["lifecyclestage"] == "customer"

    entry = next(e for e in sdk_gateway.entries("hubspot")
                 if e["path"] == "/crm/v3/objects/contacts/501")
    assert entry["prior"]["properties"]["lifecyclestage"] == "lead"
    # read-only properties HubSpot computes are never sent back (it refuses them)
    assert entry["undo"]["body"] == {"properties": {
        "email": "ada@example.com", "lifecyclestage": "lead", "firstname": "Ada"}}
    plan = sdk_gateway.roll_back(entries=[entry["id"]])
    assert [s["status"] for s in plan["steps"]] == ["applied"], plan
    assert recorder.state(CONTACT)["properties"] == {
        "email": "ada@example.com", "lifecyclestage": "lead", "firstname": "Ada",
        "hs_object_id": "501", "createdate": "2026-01-01T00:00:00Z"}
    [compensation] = [s for s in recorder.seen[since:] if s.method == "PATCH"][1:]
    assert b"hs_object_id" not in compensation.body and b"createdate" not in compensation.body
    agent_key_nowhere(recorder.seen[since:])


def test_slack_profile_change_rolls_back(recorder: Recorder, sdk_gateway: SdkGateway) -> None:
    since = len(recorder.seen)
    client = WebClient(token=AGENT_KEY, base_url=f"{sdk_gateway.proxy}/slack/api/")
    answer = client.users_profile_set(profile={"status_text": "On call",
                                               "status_emoji": ":pager:"})
    assert answer["ok"] is True
    assert answer.headers["x-gateway-decision"] == "allow"
    assert recorder.state("/slack/profile")["status_text"] == "On call"

    entry = next(e for e in sdk_gateway.entries("slack")
                 if e["path"] == "/api/users.profile.set")
    assert entry["prior"]["profile"] == PROFILE
    plan = sdk_gateway.roll_back(entries=[entry["id"]])
    assert [s["status"] for s in plan["steps"]] == ["applied"], plan
    assert recorder.state("/slack/profile") == PROFILE
    agent_key_nowhere(recorder.seen[since:])


def test_slack_auth_test_is_allowed_and_not_journaled(recorder: Recorder,
                                                      sdk_gateway: SdkGateway) -> None:
    """Slack apps call auth.test at start; the old example denied it."""
    client = WebClient(token=AGENT_KEY, base_url=f"{sdk_gateway.proxy}/slack/api/")
    before = len(sdk_gateway.entries("slack"))
    answer = client.auth_test()
    assert answer["ok"] is True
    assert answer.headers["x-gateway-decision"] == "allow"
    assert len(sdk_gateway.entries("slack")) == before  # a read: nothing journaled
    assert recorder.requests("/slack/api/auth.test")[-1].method == "POST"
