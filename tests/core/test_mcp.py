"""MCP rules and tool calls in the pure core: matching, listing, capture, undo, results."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gateway.core import journal as journaling
from gateway.core import mcp
from gateway.core.body import parse_body
from gateway.core.model import Checkpoint, JournalEntry, JournalState, Undo, Verdict
from gateway.core.policy.compiled import CallView
from gateway.core.policy.decide import tool_visible
from gateway.core.policy.loader import load_policy_set
from gateway.core.policy.mcp_schema import McpRule
from gateway.core.rollback import plan_rollback
from gateway.errors import MessageError

POLICY = """\
version: 1
kind: mcp
upstream: tools
base_url: http://127.0.0.1:9000/mcp
default: deny
rules:
  - id: lookups
    match: {tools: ["get_*", "search_*"]}
    action: allow
    effect: read
  - id: ops-only
    match: {tools: ["admin_*"], agents: [ops]}
    action: allow
  - id: no-free
    match: {tools: [update_customer], when: "arguments.plan == 'free'"}
    action: deny
  - id: update
    match: {tools: [update_customer]}
    action: allow
    capture: {tool: get_customer, arguments: {id: "{arguments.id}"}}
    undo: {tool: update_customer, arguments: prior_fields}
  - id: refunds
    match: {tools: ["refund?"], when: "arguments.amount > 100"}
    action: hold
  - id: restore
    match: {tools: [archive_customer]}
    action: allow
    capture: {tool: get_customer, arguments: {id: "{arguments.id}", full: true}}
    undo: {tool: restore_customer, arguments: prior}
  - id: tag
    match: {tools: [tag_customer]}
    action: allow
    capture: {tool: get_customer, arguments: {id: "{arguments.id}"}}
    undo: {tool: tag_customer, arguments: {id: "{arguments.id}", tag: "{prior.tag}"}}
  - id: send
    match: {tools: [send_email]}
    action: allow
    undo: none
  - id: maybe-denied
    match: {tools: [purge], when: "arguments.all"}
    action: deny
"""


@pytest.fixture(scope="module")
def upstream():
    policy_set, problems = load_policy_set({"tools.yaml": POLICY}, {})
    assert problems == []
    return policy_set, policy_set.upstreams["tools"]


def view(tool, arguments, agent="bot", method="tools/call"):
    return CallView(method, tool, [], {}, {}, agent, arguments)


DECISIONS = [
    # tool, arguments, agent, verdict, rule, write
    ("get_customer", {"id": "c1"}, "bot", Verdict.ALLOW, "lookups", False),
    ("search_customers", {}, "bot", Verdict.ALLOW, "lookups", False),
    ("admin_reset", {}, "bot", Verdict.DENY, None, True),
    ("admin_reset", {}, "ops", Verdict.ALLOW, "ops-only", True),
    ("update_customer", {"id": "c1", "plan": "free"}, "bot", Verdict.DENY, "no-free", True),
    ("update_customer", {"id": "c1", "plan": "pro"}, "bot", Verdict.ALLOW, "update", True),
    ("update_customer", {"id": "c1"}, "bot", Verdict.DENY, "no-free", True),  # unevaluable
    ("refund1", {"amount": 500}, "bot", Verdict.HOLD, "refunds", True),
    ("refund1", {"amount": 5}, "bot", Verdict.DENY, None, True),
    ("refund12", {"amount": 500}, "bot", Verdict.DENY, None, True),  # ? is one character
    ("delete_everything", {}, "bot", Verdict.DENY, None, True),
]


@pytest.mark.parametrize(("tool", "arguments", "agent", "verdict", "rule", "write"), DECISIONS)
def test_tool_calls_are_decided_by_the_first_matching_rule(upstream, tool, arguments, agent,
                                                           verdict, rule, write) -> None:
    policy_set, tools = upstream
    decision = policy_set.decide(tools, view(tool, arguments, agent))
    assert (decision.verdict, decision.rule, decision.write) == (verdict, rule, write)
    assert decision.reason


def test_other_methods_are_protocol_plumbing_and_pass_as_reads(upstream) -> None:
    policy_set, tools = upstream
    for method in ("initialize", "tools/list", "notifications/initialized", "GET"):
        decision = policy_set.decide(tools, view("", None, method=method))
        assert (decision.verdict, decision.write, decision.rule) == (Verdict.ALLOW, False, None)


VISIBLE = [
    ("get_customer", "bot", True),
    ("admin_reset", "bot", False),       # only ops may
    ("admin_reset", "ops", True),
    ("update_customer", "bot", True),    # a deny with a when may not apply
    ("refund1", "bot", True),            # held: callable
    ("purge", "bot", False),             # a when that may not deny, then the default denies
    ("delete_everything", "bot", False),
]


@pytest.mark.parametrize(("tool", "agent", "visible"), VISIBLE)
def test_tools_list_hides_only_what_every_decision_denies(upstream, tool, agent, visible) -> None:
    assert tool_visible(upstream[1], agent, tool) is visible


def rule(upstream, rule_id) -> McpRule:
    found = upstream[1].rule(rule_id)
    assert isinstance(found, McpRule)
    return found


def test_capture_arguments_are_expanded_from_the_call(upstream) -> None:
    target = journaling.capture_path(rule(upstream, "restore"), "tools/call", "archive_customer",
                                     {}, {"id": 42})
    assert mcp.decode_target(target) == ("get_customer", {"id": 42, "full": True})
    assert journaling.capture_path(rule(upstream, "send"), "tools/call", "send_email", {},
                                   {}) is None
    with pytest.raises(KeyError):
        journaling.capture_path(rule(upstream, "update"), "tools/call", "update_customer", {}, {})


PRIOR = {"id": "c1", "plan": "pro", "tag": "vip", "token": "[REDACTED]", "seats": 3}
UNDOS = [
    # rule, tool, arguments sent, prior status, undo (tool, body) or None
    ("update", "update_customer", {"id": "c1", "plan": "team"}, 200,
     ("update_customer", {"id": "c1", "plan": "pro"})),
    ("update", "update_customer", {"customer": "c1", "plan": "team"}, 200,  # not in prior: kept
     ("update_customer", {"customer": "c1", "plan": "pro"})),
    ("update", "update_customer", {"id": "c1", "token": "x"}, 200, None),  # a secret's marker
    ("restore", "archive_customer", {"id": "c1"}, 200,
     ("restore_customer", {"id": "c1", "plan": "pro", "tag": "vip", "seats": 3})),
    ("tag", "tag_customer", {"id": "c1", "tag": "churn"}, 200,
     ("tag_customer", {"id": "c1", "tag": "vip"})),
    ("send", "send_email", {"to": "a"}, None, None),
    ("update", "update_customer", {"id": "c1", "plan": "team"}, None, None),  # not captured
]


@pytest.mark.parametrize(("rule_id", "tool", "sent", "status", "expected"), UNDOS)
def test_undo_is_a_tool_call_inferred_from_the_rule_and_the_prior_state(
        upstream, rule_id, tool, sent, status, expected) -> None:
    undo, reversible = journaling.infer_undo(rule(upstream, rule_id), "tools/call", tool, {},
                                             PRIOR if status else None, status, sent, None)
    if expected is None:
        assert (undo, reversible) == (None, False)
    else:
        assert reversible and (undo["method"], undo["path"], undo["body"]) == (
            "tools/call", *expected)


def test_a_captured_call_without_an_undo_rule_is_undone_by_the_same_tool() -> None:
    undo, reversible = mcp.infer_undo(None, "set_plan", {"id": "c1", "plan": "x"},
                                      {"id": "c1", "plan": "pro"}, captured=True)
    assert reversible and undo["path"] == "set_plan" and undo["body"] == {"id": "c1",
                                                                          "plan": "pro"}
    assert mcp.infer_undo(None, "set_plan", {"id": "c1"}, None, captured=False) == (None, False)


def test_a_read_tools_state_is_its_structured_content_else_its_text() -> None:
    structured = {"content": [{"type": "text", "text": "ignored"}],
                  "structuredContent": {"id": 1, "password": "p"}}
    assert mcp.tool_state(structured) == {"id": 1, "password": "[REDACTED]"}
    as_json = {"content": [{"type": "text", "text": json.dumps({"plan": "pro"})}]}
    assert mcp.tool_state(as_json) == {"plan": "pro"}
    assert mcp.tool_state({"content": [{"type": "text", "text": "just words"}]}) == "just words"


def test_responses_are_found_in_json_and_sse_bodies_and_failures_named() -> None:
    ok = {"jsonrpc": "2.0", "id": 7, "result": {"content": [], "isError": False}}
    bad = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "nope"}],
                                                 "isError": True}}
    sse = (b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\r\n'
           b"\r\n: ping\r\n\r\nevent: message\r\ndata: " + json.dumps(bad).encode() + b"\r\n\r\n")
    assert mcp.response_in(json.dumps(ok).encode(), "application/json", 7) == ok
    assert mcp.response_in(sse, "text/event-stream", 7) == bad
    assert mcp.response_in(sse, "text/event-stream", 8) is None
    assert mcp.failure(ok) is None
    assert "nope" in mcp.failure(bad)
    assert "JSON-RPC error -32602" in mcp.failure(
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad"}})
    assert mcp.failure(None) is not None


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}',
     "duplicate key"),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}', "params.name"),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":[1]}}',
     "arguments must be an object"),
    (b'{"id":1,"method":"tools/list"}', "JSON-RPC 2.0"),
    (b"[]", "empty batch"),
    (b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}', "NaN"),
    (b"[" * 100 + b"]" * 100, "nesting"),
    (b"{", "not JSON"),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
     b'"params":{"name":"a","arguments":{"Id":1,"id":2}}}', "differing only by case"),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
     b'"params":{"name":"a","arguments":{"n":"\\ud800"}}}', "lone surrogate"),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
     b'"params":{"name":"a","arguments":{"amount":1e999}}}', "float range"),
])
def test_messages_readers_could_disagree_on_are_refused(body: bytes, problem: str) -> None:
    with pytest.raises(MessageError, match=problem):
        mcp.messages(body)


def test_a_batch_is_read_as_its_messages() -> None:
    items, batch = mcp.messages(b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
                                b'{"name":"get","arguments":{"id":1}}},'
                                b'{"jsonrpc":"2.0","method":"notifications/initialized"}]')
    assert batch and [(m.method, m.tool, m.arguments, m.is_request) for m in items] == [
        ("tools/call", "get", {"id": 1}, True), ("notifications/initialized", None, None, False)]


def entry(entry_id: str, at: int, state: JournalState, status: int, error: str | None = None,
          capture: str | None = None, after=None) -> JournalEntry:
    return JournalEntry(
        id=entry_id, at=datetime(2026, 12, 1, 12, 0, at, tzinfo=UTC), request_id="r",
        agent="bot", checkpoint=Checkpoint(run="run"), upstream="tools", method="tools/call",
        path="update_customer", query="", rule="update", decision="allow", policy_revision="v",
        request_headers={}, request_body=None, request_body_sha256=None, request_body_size=0,
        request_content_type="application/json", prior={"plan": "pro"}, prior_status=200,
        capture_path=capture,
        undo=Undo("tools/call", "update_customer", {"id": "c1", "plan": "pro"}),
        reversible=True, state=state, status=status, error=error, after=after)


def test_rollback_plans_tool_calls_and_skips_the_ones_that_reported_an_error() -> None:
    target = mcp.encode_target("get_customer", {"id": "c1"})
    done = entry("a", 1, JournalState.COMPLETED, 200, capture=target, after={"plan": "team"})
    failed = entry("b", 2, JournalState.FAILED, 200, error="the tool reported an error: x")
    plan = plan_rollback([done, failed], plan_id="p", at=datetime.now(UTC), by="op",
                         selector={}, force=False, dry_run=True,
                         parse=lambda e: parse_body(b"", None) or e.after,
                         volatile=lambda e: ())
    [step] = plan.steps
    assert (step.method, step.path, step.target, step.expected) == (
        "tools/call", "update_customer", target, {"plan": "team"})
    assert [s["entry"] for s in plan.skipped] == ["b"]
