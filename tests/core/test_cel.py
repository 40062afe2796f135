"""CEL ``when`` conditions: the lookups a policy written from an API description makes
(a name in the query or the headers, and its value) are answered without the
interpreter, and give what CEL gives."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from gateway.core.cel import Condition, header_names, lookups
from gateway.core.policy.compiled import CallView
from gateway.core.policy.decide import PolicySet, activation
from gateway.core.policy.loader import load_policy_set
from gateway.errors import ConditionError

FORMED = ("('Action' in request.query && request.query['Action'] == 'Run') || "
          "(type(request.body) == map && 'Action' in request.body && "
          "request.body['Action'] == 'Run')")  # as ``policy init`` writes it for AWS
GUARD = ("type", "body", "map")
LOOKUPS = [
    ("'Action' in request.query && request.query['Action'] == 'Run'",
     ((("query", "Action", None), ("query", "Action", "Run")),)),
    ('request.headers["x-amz-target"] == "S.Delete" && "x-amz-target" in request.headers',
     ((("headers", "x-amz-target", "S.Delete"), ("headers", "x-amz-target", None)),)),
    ("'uploads' in request.query", ((("query", "uploads", None),),)),
    ("'a && b' in request.headers", ((("headers", "a && b", None),),)),
    ("'' in request.query", ((("query", "", None),),)),
    ("'Action' in request.query || 'Other' in request.query",
     ((("query", "Action", None),), (("query", "Other", None),))),
    (FORMED, ((("query", "Action", None), ("query", "Action", "Run")),
              (GUARD, ("body", "Action", None), ("body", "Action", "Run")))),
    ("'a' in request.headers || type(request.body) == map && 'a' in request.body",
     ((("headers", "a", None),), (GUARD, ("body", "a", None)))),
]
NOT_LOOKUPS = [
    "request.query['Action'] == 'Run'",  # no such key is an error, not false
    "'Action' in request.query && request.query['Other'] == 'Run'",
    "'Action' in request.query && request.path.matches('^/v1/[^/]+:pause/?$')",
    "'a\\'b' in request.query",  # escapes: CEL reads them
    "'''x''' in request.query",
    "r'x' in request.query",
    "'x' in request.body",  # a body that is not a map: an error
    "type(request.body) == map || 'x' in request.body",  # the guard is in another branch
    "('a' in request.query || 'b' in request.query) && 'c' in request.query",
    "(('a' in request.query))",
    "!('x' in request.query)",
    "'Action' in request.query && request.query['Action'] != 'Run'",
]


@pytest.mark.parametrize("source, expected", LOOKUPS)
def test_a_when_of_lookups_is_read_as_one(source: str, expected: Any) -> None:
    assert lookups(source) == expected


@pytest.mark.parametrize("source", NOT_LOOKUPS)
def test_any_other_when_is_left_to_cel(source: str) -> None:
    assert lookups(source) is None
    Condition(source)  # still a valid condition


def _cel(source: str, values: dict[str, Any], interpreter: bool = True) -> bool | str:
    """What a condition answers; with ``interpreter``, CEL itself (the lookups off)."""
    condition = Condition(source)
    if interpreter:
        condition._lookups = None
    try:
        return condition.evaluate(values)
    except ConditionError:
        return "error"


QUERIES: list[dict[str, Any]] = [
    {}, {"Action": "Run"}, {"Action": "run"}, {"Action": "Stop"}, {"action": "Run"},
    {"Action": "Run", "Version": "1"}, {"Action": ""}, {"uploads": ""}, {"a && b": "x"},
]
HEADERS: list[dict[str, Any]] = [
    {}, {"x-amz-target": "S.Delete"}, {"x-amz-target": "S.Describe"}, {"X-Amz-Target": "S.Delete"},
]


BODIES: list[Any] = [None, {"Action": "Run"}, {"Action": "Stop"}, {}, {"a": "1"},
                     {"Action": 1}, ["Action"], "Action"]


@pytest.mark.parametrize("source", [s for s, _ in LOOKUPS])
def test_the_lookups_answer_what_cel_answers(source: str) -> None:
    for query, headers, body in itertools.product(QUERIES, HEADERS, BODIES):
        view = CallView("POST", "/", [], query, headers, "bot", body)
        values = activation(view, {})
        assert _cel(source, values, interpreter=False) == _cel(source, values), (
            query, headers, body)


def test_a_value_that_is_not_a_string_is_left_to_cel() -> None:
    source = "'Action' in request.query && request.query['Action'] == 'Run'"
    for value in (["Run"], 1, {"Run": 1}, None):
        values = {"request": {"query": {"Action": value}, "headers": {}}}
        assert _cel(source, values, interpreter=False) == _cel(source, values), value


def test_an_activation_of_another_shape_is_left_to_cel() -> None:
    source = "'Action' in request.query"
    tool = {"arguments": {"Action": "Run"}, "tool": "t", "agent": {"name": "bot"}}
    with pytest.raises(ConditionError):  # an MCP rule's ``when`` sees no request
        Condition(source).evaluate(tool)


ACTIONS = [f"Describe{n:03d}" for n in range(200)] + [f"Delete{n:03d}" for n in range(200)]


def test_hundreds_of_operations_on_one_path_are_told_apart() -> None:
    """A policy as ``gateway policy init`` writes one for AWS's query APIs: a rule per
    operation, told apart by ``Action``; the first that matches decides."""
    rules = "".join(
        f"  - id: r-{action.lower()}\n"
        f"    match: {{methods: [GET], path: \"/\", when: \"'Action' in request.query && "
        f"request.query['Action'] == '{action}'\"}}\n"
        f"    action: {'hold' if action.startswith('Delete') else 'allow'}\n"
        for action in ACTIONS)
    text = f"upstream: aws\nbase_url: http://127.0.0.1:9\ndefault: deny\nrules:\n{rules}"
    policies, problems = load_policy_set({"aws.yaml": text}, {})
    assert policies is not None, problems
    upstream = policies.upstreams["aws"]
    assert all(c._lookups is not None for c in upstream.conditions.values())
    for action, verdict in (("Describe000", "allow"), ("Delete199", "hold"),
                            ("Delete100", "hold"), ("delete199", "deny"), ("Nothing", "deny")):
        view = CallView("GET", "/", [], {"Action": action}, {}, "bot")
        decision = PolicySet.decide(policies, upstream, view)
        assert decision.verdict.value == verdict, action
        assert decision.rule == (f"r-{action.lower()}" if verdict != "deny" else None)


@pytest.mark.parametrize(("source", "names"), [
    ("'x-force' in request.headers && request.headers['x-force'] == 'true'", {"x-force"}),
    ("request.headers[\"X-Amz-Target\"] == 'A.B'", {"x-amz-target"}),
    ("has(request.headers.debug_mode)", {"debug_mode"}),
    ("request.body.amount > 10", set()),
    ("request.headers.exists(h, h.startsWith('x-'))", None),
    ("size(request.headers) > 3", None),
    ("request.headers[request.query.name] == 'x'", None),
    ("request['headers']['x-force'] == 'true'", None),
])
def test_header_names_a_when_reads(source: str, names: set[str] | None) -> None:
    """Named headers are judged by name; a ``when`` that reads them otherwise: all."""
    assert Condition(source).headers == (None if names is None else frozenset(names))
    if "headers" in source:
        assert header_names(source) == Condition(source).headers


@pytest.mark.parametrize("source", ["('a' in request.query", "'a' in request.query)",
                                    "('a' in request.query))", "'a' in request.query ||"])
def test_text_that_is_not_cel_is_not_lookups(source: str) -> None:
    assert lookups(source) is None
