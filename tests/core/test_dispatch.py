"""Rules looked up by the value their ``when`` requires: the same decisions as trying
every rule in order, over a policy that mixes every kind of rule."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from gateway.core.policy.compiled import CallView
from gateway.core.policy.loader import load_policy_set
from gateway.errors import Ambiguous


def _when(name: str, value: str) -> str:
    return (f"('{name}' in request.query && request.query['{name}'] == '{value}') || "
            f"(type(request.body) == map && '{name}' in request.body && "
            f"request.body['{name}'] == '{value}')")


TARGET = ("'x-amz-target' in request.headers && "
          "request.headers['x-amz-target'] == 'S.Delete'")
RULES = f"""
- id: admin
  match: {{methods: [GET, POST], path: "/admin/**"}}
  action: deny
- id: run
  match: {{methods: [GET, POST], path: /, when: "{_when('Action', 'Run')}"}}
  action: allow
- id: stop-bot
  match: {{methods: [POST], path: /, when: "{_when('Action', 'Stop')}", agents: [bot]}}
  action: allow
- id: stop
  match: {{methods: [GET, POST], path: /, when: "{_when('Action', 'Stop')}"}}
  action: hold
- id: target
  match: {{methods: [POST], path: /, when: "{TARGET}"}}
  action: hold
- id: uploads
  match: {{methods: [POST], path: "/{{bucket}}", when: "'uploads' in request.query"}}
  action: allow
- id: big
  match: {{methods: [POST], path: "/**", when: "request.body.amount > 10"}}
  action: hold
- id: items
  match: {{methods: [GET, POST], path: "/{{bucket}}"}}
  action: allow
"""


def _policy() -> Any:
    text = "upstream: api\nbase_url: http://127.0.0.1:9\ndefault: deny\nrules:\n" + "\n".join(
        "  " + line for line in RULES.strip("\n").splitlines())
    policies, problems = load_policy_set({"api.yaml": text}, {})
    assert policies is not None, problems
    return policies


PATHS = ["/", "/b1", "/admin/x", "/b1/k"]
QUERIES: list[dict[str, str]] = [{}, {"Action": "Run"}, {"Action": "Stop"}, {"Action": "x"},
                                 {"uploads": ""}]
HEADERS: list[dict[str, str]] = [{}, {"x-amz-target": "S.Delete"}, {"x-amz-target": "S.Put"}]
BODIES: list[Any] = [None, {"Action": "Run"}, {"Action": "Stop"}, {"Action": 7},
                     {"amount": 11}, {"amount": "11"}, ["Action"], "Run"]


@pytest.mark.parametrize("path", PATHS)
def test_looked_up_rules_decide_as_every_rule_tried_in_order(path: str) -> None:
    policies = _policy()
    upstream = policies.upstreams["api"]
    assert upstream.dispatch is not None
    every = copy.copy(upstream)
    every.dispatch = None
    segments = [s for s in path.split("/") if s]
    for method, agent, query, headers, body in itertools.product(
            ("GET", "POST"), ("bot", "other"), QUERIES, HEADERS, BODIES):
        view = CallView(method, path, segments, query, headers, agent, body)
        fast, slow = policies.decide(upstream, view), policies.decide(every, view)
        assert (fast.verdict, fast.rule, fast.reason, fast.params) == (
            slow.verdict, slow.rule, slow.reason, slow.params), view


def test_only_the_rules_a_value_names_are_tried() -> None:
    upstream = _policy().upstreams["api"]
    dispatch = upstream.dispatch
    always = {0, 5, 6, 7}  # no when, presence only, a CEL when
    assert dispatch.possible({}, {}, None) == always
    assert dispatch.possible({"Action": "Stop"}, {}, None) == always | {2, 3}
    assert dispatch.possible({}, {}, {"Action": "Run"}) == always | {1}
    assert dispatch.possible({}, {"x-amz-target": "S.Delete"}, None) == always | {4}
    assert dispatch.possible({}, {}, {"Action": 7}) == always | {1, 2, 3}  # CEL decides


def test_a_trie_walk_of_some_rules_is_the_walk_of_all_of_them() -> None:
    trie = _policy().upstreams["api"].trie
    for path in PATHS:
        segments = [s for s in path.split("/") if s]
        every = trie.match(segments)
        for only in (frozenset(), frozenset({1}), frozenset({0, 7}), frozenset(range(8))):
            assert trie.match(segments, only) == [m for m in every if m[0] in only]
    with pytest.raises(Ambiguous):  # a spelling of a literal: refused whatever is tried
        trie.match(["ADMIN", "x"], frozenset({1}))
