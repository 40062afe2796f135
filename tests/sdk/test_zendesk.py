"""The Zendesk example policy, driven as Zendesk's API-token clients call it:
``Authorization: Basic`` of ``{email}/token:{key}``. The gateway finds the agent
key in the password half, replaces the header with the policy's credential,
and the ticket update (a PUT, captured first) rolls back."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import AGENT_KEY
from tests.sdk.conftest import UPSTREAM_SECRETS, SdkGateway, agent_key_nowhere
from tests.sdk.recorder import Recorder

TICKET = "/zendesk/api/v2/tickets/42.json"
BEFORE = {"ticket": {"id": 42, "subject": "Printer on fire", "status": "open",
                     "priority": "high", "tags": ["hardware"]}}


@pytest.fixture(scope="module", autouse=True)
def seeded(recorder: Recorder) -> None:
    recorder.seed({TICKET: BEFORE})


def test_ticket_update_with_basic_api_token_auth_rolls_back(
        recorder: Recorder, sdk_gateway: SdkGateway) -> None:
    since = len(recorder.seen)
    answer = httpx.put(f"{sdk_gateway.proxy}/zendesk/api/v2/tickets/42.json",
                       json={"ticket": {"status": "solved", "subject": "Printer on fire",
                                        "priority": "low", "tags": ["hardware"], "id": 42}},
                       auth=("agent@example.com/token", AGENT_KEY))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gateway-decision"] == "allow"
    assert recorder.state(TICKET)["ticket"]["status"] == "solved"

    entry = next(e for e in sdk_gateway.entries("zendesk")
                 if e["path"] == "/api/v2/tickets/42.json")
    assert entry["rule"] == "update-ticket" and entry["prior"] == BEFORE
    plan = sdk_gateway.roll_back(entries=[entry["id"]])
    assert [s["status"] for s in plan["steps"]] == ["applied"], plan
    assert recorder.state(TICKET) == BEFORE
    agent_key_nowhere(recorder.seen[since:])
    for request in recorder.seen[since:]:
        assert ("authorization", f"Bearer {UPSTREAM_SECRETS['ZENDESK_OAUTH_TOKEN']}") in \
            request.headers
