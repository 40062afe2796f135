"""PolicySet.decide: first match wins, a reason in every branch, fail closed."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from gateway.core.model import Verdict
from gateway.core.policy.compiled import CallView, Upstream
from gateway.core.policy.decide import PolicySet
from gateway.core.policy.loader import load_policy_set

POLICY = """\
upstream: crm
base_url: http://127.0.0.1:3000
default: {default}
rules:
  - id: bot-may-delete-drafts
    match: {{methods: [DELETE], path: "/drafts/{{id}}", agents: [cleanup-bot]}}
    action: allow
  - id: read-all
    match: {{methods: [GET, HEAD], path: "/**"}}
    action: allow
  - id: me-first
    match: {{methods: [PATCH], path: "/customers/me"}}
    action: deny
  - id: edit-customer
    match: {{methods: [PATCH, PUT], path: "/customers/{{id}}"}}
    action: allow
  - id: edit-any
    match: {{methods: [PATCH, PUT], path: "/customers/*"}}
    action: hold
  - id: big-deal
    match: {{methods: [POST], path: "/deals", when: "request.body.amount > 10000"}}
    action: hold
  - id: vip-note
    match:
      methods: [POST]
      path: "/customers/{{id}}/notes"
      when: 'request.params.id == "vip" && agent.name == "support-bot"'
    action: hold
  - id: notes
    match: {{methods: [POST], path: "/customers/{{id}}/notes", agents: [support-bot, sales-bot]}}
    action: allow
  - id: by-header
    match: {{methods: [POST], path: "/tagged", when: 'request.headers["x-tag"] == "ok"'}}
    action: allow
  - id: by-query
    match: {{methods: [POST], path: "/search", when: 'request.query.dry == "1"'}}
    action: allow
  - id: not-a-bool
    match: {{methods: [POST], path: "/weird", when: "request.body.amount"}}
    action: allow
  - id: deals-fallback
    match: {{methods: [POST], path: "/deals/**"}}
    action: allow
  - id: weird-fallback
    match: {{methods: [POST], path: "/**"}}
    action: allow
"""


@functools.cache
def load(default: str = "deny") -> tuple[PolicySet, Upstream]:
    policy_set, problems = load_policy_set({"crm.yaml": POLICY.format(default=default)}, env={})
    assert problems == []
    assert policy_set is not None
    return policy_set, policy_set.upstreams["crm"]


def view(method: str, path: str, body: Any = None, agent: str = "support-bot",
         headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> CallView:
    return CallView(method, path, [s for s in path.split("/") if s], query or {}, headers or {},
                    agent, body)


def decide(method: str, path: str, body: Any = None, default: str = "deny",
           **kwargs: Any) -> tuple[str, str | None]:
    policy_set, upstream = load(default)
    decision = policy_set.decide(upstream, view(method, path, body, **kwargs))
    return decision.verdict.value, decision.rule


@pytest.mark.parametrize(("method", "path", "body", "verdict", "rule"), [
    # first match wins, in file order
    ("GET", "/customers/me", None, "allow", "read-all"),
    ("PATCH", "/customers/me", {}, "deny", "me-first"),
    ("PATCH", "/customers/42", {}, "allow", "edit-customer"),
    ("PUT", "/customers/42", {}, "allow", "edit-customer"),
    # method filtering: rules for other methods are skipped
    ("HEAD", "/deals/1", None, "allow", "read-all"),
    ("PUT", "/customers/me", {}, "allow", "edit-customer"),  # me-first is PATCH only
    ("DELETE", "/customers/42", None, "deny", None),
    ("OPTIONS", "/customers", None, "deny", None),
    ("POST", "/deals/1/items", {}, "allow", "deals-fallback"),
    # when: true decides, false falls through to the next rule
    ("POST", "/deals", {"amount": 25000}, "hold", "big-deal"),
    ("POST", "/deals", {"amount": 10000}, "allow", "deals-fallback"),  # ** matches empty rest
    ("POST", "/deals", {"amount": 25000.5}, "hold", "big-deal"),
    ("POST", "/tagged", {}, "deny", "by-header"),  # missing header: unevaluable, see below
    ("POST", "/customers/vip/notes", {}, "hold", "vip-note"),
    ("POST", "/customers/c1/notes", {}, "allow", "notes"),
])
def test_first_match_wins(method: str, path: str, body: Any, verdict: str,
                          rule: str | None) -> None:
    assert decide(method, path, body) == (verdict, rule)


@pytest.mark.parametrize(("headers", "query", "path", "verdict", "rule"), [
    ({"x-tag": "ok"}, {}, "/tagged", "allow", "by-header"),
    ({"x-tag": "no"}, {}, "/tagged", "allow", "weird-fallback"),
    ({}, {"dry": "1"}, "/search", "allow", "by-query"),
    ({}, {"dry": "0"}, "/search", "allow", "weird-fallback"),
])
def test_when_sees_headers_and_query(headers: dict[str, str], query: dict[str, str], path: str,
                                     verdict: str, rule: str) -> None:
    assert decide("POST", path, {}, headers=headers, query=query) == (verdict, rule)


@pytest.mark.parametrize(("agent", "method", "path", "verdict", "rule"), [
    ("cleanup-bot", "DELETE", "/drafts/d1", "allow", "bot-may-delete-drafts"),
    ("support-bot", "DELETE", "/drafts/d1", "deny", None),     # not for it: default
    ("support-bot", "POST", "/customers/c1/notes", "allow", "notes"),
    ("sales-bot", "POST", "/customers/c1/notes", "allow", "notes"),
    ("cleanup-bot", "POST", "/customers/c1/notes", "allow", "weird-fallback"),  # next rule
    ("sales-bot", "POST", "/customers/vip/notes", "allow", "notes"),  # when names support-bot
    ("anonymous", "GET", "/drafts/d1", "allow", "read-all"),   # rules without agents: everyone
])
def test_agents_scope_a_rule(agent: str, method: str, path: str, verdict: str,
                             rule: str | None) -> None:
    assert decide(method, path, {}, agent=agent) == (verdict, rule)


@pytest.mark.parametrize("default", ["allow", "deny", "hold"])
def test_default_when_no_rule_matches(default: str) -> None:
    policy_set, upstream = load(default)
    decision = policy_set.decide(upstream, view("DELETE", "/customers/42"))
    assert decision.verdict is Verdict(default)
    assert decision.rule is None
    assert decision.params == {}
    assert "default" in decision.reason
    assert decision.revision == policy_set.revision
    assert decision.upstream == "crm"


@pytest.mark.parametrize(("body", "why"), [
    ({"title": "no amount"}, "missing field"),
    (None, "body not JSON (parsed as None)"),
    ({"amount": "25000"}, "type error: string > int"),
    ({"amount": [1]}, "type error: list > int"),
    ([{"amount": 25000}], "body is a list"),
    ("25000", "body is a string"),
])
def test_unevaluable_when_denies_by_that_rule_and_never_falls_through(body: Any, why: str) -> None:
    # Two later rules (deals-fallback, weird-fallback) and the default would allow
    # POST /deals: an unevaluable `when` must still deny, by big-deal.
    policy_set, upstream = load(default="allow")
    decision = policy_set.decide(upstream, view("POST", "/deals", body))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "big-deal"), why
    assert "request.body.amount > 10000" in decision.reason
    assert decision.revision == policy_set.revision


def test_a_when_that_is_not_a_boolean_denies() -> None:
    policy_set, upstream = load(default="allow")
    decision = policy_set.decide(upstream, view("POST", "/weird", {"amount": 1}))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "not-a-bool")
    assert "not a boolean" in decision.reason


def test_when_on_a_rule_for_another_method_is_not_evaluated() -> None:
    # big-deal is POST only: a PUT with an unparseable body must not be denied by it
    assert decide("PUT", "/deals", None, default="allow") == ("allow", None)


def test_when_on_a_rule_for_another_agent_is_not_evaluated() -> None:
    text = """\
upstream: crm
base_url: http://x
default: allow
rules:
  - id: bot-only
    match: {methods: [POST], path: /x, agents: [bot], when: "request.body.a == 1"}
    action: deny
"""
    policy_set, _ = load_policy_set({"crm.yaml": text}, env={})
    assert policy_set is not None
    upstream = policy_set.upstreams["crm"]
    assert policy_set.decide(upstream, view("POST", "/x", None, agent="other")).verdict \
        is Verdict.ALLOW
    assert policy_set.decide(upstream, view("POST", "/x", None, agent="bot")).verdict \
        is Verdict.DENY


@pytest.mark.parametrize(("method", "path", "params"), [
    ("PATCH", "/customers/42", {"id": "42"}),
    ("POST", "/customers/c7/notes", {"id": "c7"}),
    ("PUT", "/customers/me", {"id": "me"}),
    ("GET", "/customers/42", {}),
])
def test_params_are_bound_from_the_deciding_rule(method: str, path: str,
                                                 params: dict[str, str]) -> None:
    policy_set, upstream = load()
    assert policy_set.decide(upstream, view(method, path, {})).params == params


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/customers", None),
    ("PATCH", "/customers/me", {}),
    ("POST", "/deals", {"amount": 20000}),
    ("POST", "/deals", None),
    ("DELETE", "/nothing", None),
])
def test_every_decision_has_a_reason_and_the_revision(method: str, path: str, body: Any) -> None:
    policy_set, upstream = load()
    decision = policy_set.decide(upstream, view(method, path, body))
    assert decision.reason
    assert decision.revision == policy_set.revision
    assert decision.upstream == "crm"
    if decision.rule is not None and decision.verdict is not Verdict.DENY:
        assert decision.rule in decision.reason


def test_revision_of_the_decision_follows_the_set() -> None:
    first, upstream = load("deny")
    second, upstream2 = load("allow")
    assert first.revision != second.revision
    assert first.decide(upstream, view("GET", "/")).revision == first.revision
    assert second.decide(upstream2, view("GET", "/")).revision == second.revision


@pytest.mark.parametrize(("method", "path", "needed"), [
    ("POST", "/deals", True),              # big-deal has a `when`
    ("PUT", "/deals", True),               # candidates are by path: conservative
    ("POST", "/customers/c1/notes", True),
    ("POST", "/tagged", True),
    ("GET", "/customers/42", False),
    ("PATCH", "/customers/42", False),
    ("POST", "/deals/1", False),
    ("DELETE", "/drafts/1", False),
])
def test_needs_body(method: str, path: str, needed: bool) -> None:
    _, upstream = load()
    assert upstream.needs_body(upstream.trie.match(view(method, path).segments)) is needed


def test_upstream_rule_lookup() -> None:
    _, upstream = load()
    rule = upstream.rule("big-deal")
    assert rule is not None and rule.action == "hold"
    assert upstream.rule("nope") is None
    assert upstream.rule(None) is None
