"""The shipped policies load cleanly and decide as their comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.policy.compiled import CallView
from gateway.core.policy.loader import load_policy_set

ROOT = Path(__file__).resolve().parents[2] / "policies"
# the examples name their secrets as ${VAR}: an unset one is a load problem
EXAMPLE_ENV = {name: "x" for name in (
    "STRIPE_API_KEY", "GITHUB_TOKEN", "HUBSPOT_ACCESS_TOKEN", "ZENDESK_OAUTH_TOKEN",
    "OPENAI_API_KEY", "SLACK_BOT_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def load(folder: Path):
    texts = {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))}
    policy_set, problems = load_policy_set(texts, env=EXAMPLE_ENV)
    assert problems == []
    return policy_set


@pytest.fixture(scope="module")
def policies():
    demo, examples = load(ROOT), load(ROOT / "examples")
    return {**demo.upstreams, **examples.upstreams}, demo


def test_folders_hold_the_expected_upstreams(policies):
    upstreams, _ = policies
    assert set(upstreams) == {"crm", "crm-tools", "stripe", "github", "hubspot", "zendesk",
                              "openai", "slack", "s3"}
    assert upstreams["crm"].base_url == "http://127.0.0.1:3000"
    assert upstreams["crm-tools"].base_url == "http://127.0.0.1:3000/mcp"  # gateway demo's
    assert upstreams["crm"].credential_value is None  # runs without any env


CASES = [
    # upstream, method, path, body, verdict, rule
    ("crm", "GET", "/customers", None, "allow", "read-all"),
    ("crm", "HEAD", "/customers/cus_1", None, "allow", "read-all"),
    ("crm", "PATCH", "/customers/cus_1", {"plan": "free"}, "allow", "edit-customer"),
    ("crm", "PUT", "/customers/cus_1", {"name": "x"}, "allow", "edit-customer"),
    ("crm", "POST", "/customers", {"name": "x"}, "allow", "create-customer"),
    ("crm", "POST", "/deals", {"amount": 500}, "allow", "deal-writes"),
    ("crm", "POST", "/deals", {"amount": 25000}, "hold", "big-deal"),
    ("crm", "POST", "/deals", {"title": "no amount"}, "deny", "big-deal"),  # fails closed
    ("crm", "PATCH", "/deals/deal_1", {"amount": 99999}, "allow", "deal-writes"),
    ("crm", "DELETE", "/customers/cus_1", None, "deny", "no-deletes"),
    ("crm", "POST", "/invoices", {}, "deny", None),
    ("stripe", "GET", "/v1/customers/cus_9", None, "allow", "read-all"),
    ("stripe", "POST", "/v1/customers/cus_9", None, "allow", "update-customer"),
    ("stripe", "POST", "/v1/refunds", None, "hold", "refunds"),
    ("stripe", "DELETE", "/v1/customers/cus_9", None, "deny", "no-customer-deletes"),
    ("stripe", "POST", "/v1/charges", None, "deny", None),
    ("github", "PATCH", "/repos/o/r/issues/7", {"state": "closed"}, "allow", "edit-issue"),
    ("github", "PUT", "/repos/o/r/pulls/7/merge", {}, "hold", "merge-pull-request"),
    ("github", "DELETE", "/repos/o/r", None, "deny", "no-repo-delete"),
    ("github", "PUT", "/repos/o/r/contents/src/app.py", {}, "hold", "commit-file"),
    ("github", "DELETE", "/repos/o/r/git/refs/heads/main", None, "deny", "no-ref-deletes"),
    ("hubspot", "PATCH", "/crm/v3/objects/contacts/51", {"properties": {}}, "allow",
     "edit-contact"),
    ("hubspot", "DELETE", "/crm/v3/objects/contacts/51", None, "hold", "archive-contact"),
    ("hubspot", "POST", "/crm/v3/objects/contacts/search", {}, "allow", "search"),
    ("hubspot", "PATCH", "/crm/v3/objects/deals/9", {"properties": {"amount": "75000"}},
     "hold", "big-deal-change"),
    ("hubspot", "PATCH", "/crm/v3/objects/deals/9", {"properties": {"dealstage": "won"}},
     "allow", "edit-deal"),
    ("hubspot", "POST", "/crm/v3/objects/contacts/batch/archive", {}, "deny",
     "no-batch-archive"),
    ("zendesk", "PUT", "/api/v2/tickets/42", {"ticket": {"status": "solved"}}, "allow",
     "update-ticket"),
    ("zendesk", "PUT", "/api/v2/tickets/42.json", {"ticket": {"comment": {"body": "hi"}}},
     "hold", "public-reply"),
    ("zendesk", "PUT", "/api/v2/tickets/42",
     {"ticket": {"comment": {"body": "note", "public": False}}}, "allow", "update-ticket"),
    ("zendesk", "PUT", "/api/v2/tickets/update_many.json", {"ticket": {}}, "deny",
     "no-bulk-tickets"),
    ("zendesk", "DELETE", "/api/v2/tickets/42", None, "hold", "delete-ticket"),
    ("zendesk", "DELETE", "/api/v2/tickets/42.json", None, "deny",
     "delete-ticket-json-suffix"),
    ("zendesk", "POST", "/api/v2/tickets.json", {"ticket": {}}, "allow", "create-ticket-json"),
    # the demo CRM's tools over MCP: the method is the JSON-RPC one, the path the tool
    ("crm-tools", "tools/call", "get_customer", {"id": "cus_1"}, "allow", "lookups"),
    ("crm-tools", "tools/call", "update_customer", {"id": "cus_1", "plan": "pro"}, "allow",
     "update-customer"),
    ("crm-tools", "tools/call", "update_customer", {"id": "cus_1", "name": "A"}, "allow",
     "update-customer"),
    ("crm-tools", "tools/call", "update_customer", {"id": "cus_1", "plan": "free"}, "deny",
     None),
    ("crm-tools", "tools/call", "create_deal", {"amount": 20000}, "hold", "big-deals"),
    ("crm-tools", "tools/call", "create_deal", {"amount": 20}, "allow", "deals"),
    ("crm-tools", "tools/call", "delete_customer", {"id": "cus_1"}, "deny", None),
    ("crm-tools", "tools/list", "", None, "allow", None),
]


@pytest.mark.parametrize(("upstream", "method", "path", "body", "verdict", "rule"), CASES)
def test_decisions(policies, upstream, method, path, body, verdict, rule):
    upstreams, policy_set = policies
    view = CallView(method=method, path=path, segments=[s for s in path.split("/") if s],
                    query={}, headers={}, agent="support-bot", body=body)
    decision = policy_set.decide(upstreams[upstream], view)
    assert (decision.verdict.value, decision.rule) == (verdict, rule), decision.reason
