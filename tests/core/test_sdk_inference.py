"""Pure rules behind real SDKs: nested form prior_fields, honest undo inference,
URL rewriting, credential kinds and ``policy explain`` (issue 8). One row per case."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.core.body import FORM, JSON, form_key_path
from gateway.core.journal import infer_undo, undo_for_created
from gateway.core.policy.loader import load_policy_set
from gateway.core.policy.schema import Rule
from gateway.core.reversibility import IRREVERSIBLE, RECONCILED, REVERSIBLE, explain_rule, warnings
from gateway.core.urls import rewritable, rewrite_headers, rewrite_text

STRIPE_PRIOR = {"id": "cus_1", "email": "a@x", "metadata": {"tier": "silver", "region": "eu"},
                "items": [{"price": "p_1", "quantity": 1}]}
UPDATE = Rule.model_validate({
    "id": "update", "match": {"methods": ["POST"], "path": "/v1/customers/{id}"},
    "action": "allow", "capture": {"path": "/v1/customers/{id}"},
    "undo": {"method": "POST", "path": "/v1/customers/{id}", "body": "prior_fields"}})


@pytest.mark.parametrize(("key", "path"), [
    ("email", ["email"]),
    ("metadata[tier]", ["metadata", "tier"]),
    ("items[0][price]", ["items", "0", "price"]),
    ("expand[]", ["expand", ""]),
    ("odd[key", ["odd[key"]),
    ("a]b[c]", ["a]b", "c"]),  # as Rack and PHP read it
])
def test_form_key_path(key: str, path: list[str]) -> None:
    assert form_key_path(key) == path


@pytest.mark.parametrize(("sent", "body"), [
    ({"metadata[tier]": "gold"}, {"metadata[tier]": "silver"}),
    ({"metadata[new]": "x"}, {"metadata[new]": ""}),  # did not exist: unset the Stripe way
    ({"metadata[tier]": "gold", "metadata[new]": "x", "email": "b@x"},
     {"metadata[tier]": "silver", "metadata[new]": "", "email": "a@x"}),
    ({"items[0][price]": "p_2"}, {"items[0][price]": "p_1"}),
    ({"items[1][price]": "p_2"}, {"items[1][price]": ""}),
    ({"metadata": ""}, {"metadata": {"tier": "silver", "region": "eu"}}),  # whole map back
])
def test_form_prior_fields_follow_bracket_keys(sent: dict[str, str], body: Any) -> None:
    undo, reversible = infer_undo(UPDATE, "POST", "/v1/customers/cus_1", {"id": "cus_1"},
                                  STRIPE_PRIOR, 200, sent, FORM)
    assert reversible is True
    assert undo == {"method": "POST", "path": "/v1/customers/cus_1", "body": body,
                    "content_type": FORM}


NO_CAPTURE_UPDATE = Rule.model_validate({
    "id": "u", "match": {"methods": ["POST"], "path": "/v1/customers/{id}"}, "action": "allow"})


@pytest.mark.parametrize(("case", "path", "headers", "body", "expected"), [
    ("created: id of the answer", "/v1/customers", {}, {"id": "cus_9"},
     {"method": "DELETE", "path": "/v1/customers/cus_9", "body": None, "content_type": JSON}),
    ("created: Location", "/items", {"location": "/items/7"}, None,
     {"method": "DELETE", "path": "/items/7", "body": None, "content_type": JSON}),
    ("Stripe update of the item: the answer's id is the path's", "/v1/customers/cus_X", {},
     {"id": "cus_X"}, None),
    ("Location names the item itself", "/items/7", {"location": "/items/7"}, None, None),
])
def test_undo_for_created_never_guesses(case: str, path: str, headers: dict[str, str],
                                        body: Any, expected: Any) -> None:
    assert undo_for_created(path, "", 200, headers, body) == expected


@pytest.mark.parametrize(("case", "rule", "method", "ctype", "prior", "sent", "expected"), [
    ("multipart POST with capture: no field-built undo", UPDATE, "POST",
     "multipart/form-data; boundary=x", STRIPE_PRIOR, None, (None, False)),
    ("multipart PUT over a JSON prior: irreversible", None, "PUT",
     "multipart/form-data; boundary=x", STRIPE_PRIOR, None, (None, False)),
    ("octet-stream PATCH over a JSON prior", None, "PATCH", "application/octet-stream",
     STRIPE_PRIOR, None, (None, False)),
    ("JSON field the prior lacked is unset with null", UPDATE, "POST", JSON, STRIPE_PRIOR,
     {"nickname": "x"}, ({"method": "POST", "path": "/v1/customers/cus_1",
                          "body": {"nickname": None}, "content_type": JSON}, True)),
])
def test_honest_inference(case: str, rule: Rule | None, method: str, ctype: str, prior: Any,
                          sent: Any, expected: Any) -> None:
    assert infer_undo(rule, method, "/v1/customers/cus_1", {"id": "cus_1"}, prior, 200, sent,
                      ctype) == expected


def _rule(**fields: Any) -> Rule:
    return Rule.model_validate({"id": "r", "action": "allow", **fields})


@pytest.mark.parametrize(("fields", "tier", "reversibility"), [
    ({"match": {"methods": ["GET", "HEAD"]}}, "read", "-"),
    ({"match": {"methods": ["PATCH"], "path": "/c/{id}"}}, "write", REVERSIBLE),
    ({"match": {"methods": ["DELETE"], "path": "/c/{id}"}}, "destructive", REVERSIBLE),
    ({"match": {"methods": ["DELETE"], "path": "/c/{id}"}, "capture": False}, "destructive",
     IRREVERSIBLE),
    ({"match": {"methods": ["POST"], "path": "/c"}}, "write", RECONCILED),
    ({"match": {"methods": ["POST"], "path": "/c/{id}"}}, "write", IRREVERSIBLE),
    ({"match": {"methods": ["POST"], "path": "/c/{id}"}, "capture": {"path": "/c/{id}"}},
     "write", REVERSIBLE),
    ({"match": {"methods": ["POST"], "path": "/c/{id}"}, "undo": "none"}, "write", IRREVERSIBLE),
    ({"match": {"methods": ["POST"], "path": "/c"},
      "undo": {"method": "POST", "path": "/c", "body": "prior"}}, "write", IRREVERSIBLE),
    ({"match": {"methods": ["DELETE"]}, "action": "deny"}, "destructive", "-"),
])
def test_explain_rule(fields: dict[str, Any], tier: str, reversibility: str) -> None:
    line = explain_rule("crm", _rule(**fields))
    assert (line.tier, line.reversibility) == (tier, reversibility)


def test_check_warns_about_a_post_to_an_item_without_capture() -> None:
    text = ("upstream: stripe\nbase_url: http://s\nrules:\n"
            "  - {id: update, match: {methods: [POST], path: '/v1/customers/{id}'}, action: allow}\n"
            "  - {id: create, match: {methods: [POST], path: '/v1/customers'}, action: allow}\n")
    policy_set, problems = load_policy_set({"s.yaml": text}, {})
    assert problems == [] and policy_set is not None
    [warning] = warnings(policy_set.upstreams["stripe"])
    assert warning.startswith("rule 'update': a POST to an item path without a capture")


BASE = "http://127.0.0.1:3000"
PUBLIC = "http://gw:8080/gh"


@pytest.mark.parametrize(("text", "expected"), [
    (f'{{"url":"{BASE}/repos/a"}}', '{"url":"http://gw:8080/gh/repos/a"}'),
    (f"{BASE}", PUBLIC),
    (f"{BASE}?page=2", f"{PUBLIC}?page=2"),
    ('{"url":"http:\\/\\/127.0.0.1:3000\\/x"}', '{"url":"http:\\/\\/gw:8080\\/gh\\/x"}'),
    ("http://127.0.0.1:30000/x", "http://127.0.0.1:30000/x"),  # another port: left alone
    ("http://127.0.0.1:3000.evil/x", "http://127.0.0.1:3000.evil/x"),
    ("https://127.0.0.1:3000/x", "https://127.0.0.1:3000/x"),  # another scheme
])
def test_rewrite_text(text: str, expected: str) -> None:
    assert rewrite_text(text, BASE, PUBLIC) == expected


def test_rewrite_headers_only_url_headers() -> None:
    headers = [("Location", f"{BASE}/a"), ("Link", f'<{BASE}/a?page=2>; rel="next"'),
               ("Content-Location", f"{BASE}/b"), ("X-Other", f"{BASE}/c")]
    assert rewrite_headers(headers, BASE, PUBLIC) == [
        ("Location", f"{PUBLIC}/a"), ("Link", f'<{PUBLIC}/a?page=2>; rel="next"'),
        ("Content-Location", f"{PUBLIC}/b"), ("X-Other", f"{BASE}/c")]


@pytest.mark.parametrize(("headers", "expected"), [
    ([("content-type", "application/json")], True),
    ([("content-type", "application/vnd.github+json")], True),
    ([("content-type", "text/html; charset=utf-8")], True),
    ([("content-type", "application/json"), ("content-encoding", "gzip")], False),
    ([("content-type", "application/octet-stream")], False),
])
def test_rewritable(headers: list[tuple[str, str]], expected: bool) -> None:
    assert rewritable(headers) is expected


def _policy(credentials: str) -> str:
    return f"upstream: api\nbase_url: http://api\ncredentials: {credentials}\n"


@pytest.mark.parametrize(("credentials", "env", "headers", "query", "sigv4"), [
    ('{header: X-Token, value: "${T}"}', {"T": "t1"}, (("x-token", "t1"),), None, None),
    ('{basic: {username: "${U}", password: "${P}"}}', {"U": "u", "P": "p"},
     (("authorization", "Basic " + base64.b64encode(b"u:p").decode()),), None, None),
    ('{query: {name: key, value: "${K}"}}', {"K": "k1"}, (), ("key", "k1"), None),
    ('{aws_sigv4: {access_key_id: "${A}", secret_access_key: "${S}", region: eu-west-1, '
     'service: s3}}', {"A": "AKIA1", "S": "sec"}, (), None, ("AKIA1", "sec", "eu-west-1")),
])
def test_credential_kinds(credentials: str, env: dict[str, str], headers: Any, query: Any,
                          sigv4: Any) -> None:
    policy_set, problems = load_policy_set({"api.yaml": _policy(credentials)}, env)
    assert problems == [] and policy_set is not None
    credential = policy_set.upstreams["api"].credential
    assert credential is not None
    assert (credential.headers, credential.query) == (headers, query)
    keys = credential.sigv4
    assert (None if keys is None else (keys.access_key_id, keys.secret_access_key,
                                       keys.region)) == sigv4


@pytest.mark.parametrize(("credentials", "message"), [
    ('{basic: {username: "${U}", password: x}}', "credentials: ${U} is not set in the environment"),
    ('{aws_sigv4: {access_key_id: a, secret_access_key: "${S}", region: r, service: s3}}',
     "credentials: ${S} is not set in the environment"),
    ("{header: A, value: b, basic: {username: u, password: p}}", "exactly one of"),
    ("{}", "exactly one of"),
    ("{header: A}", "header and value go together"),
    ("{query: {name: k}}", "query.value"),
])
def test_credential_problems(credentials: str, message: str) -> None:
    policy_set, problems = load_policy_set({"api.yaml": _policy(credentials)}, {})
    assert policy_set is None
    assert any(message in p for p in problems), problems
