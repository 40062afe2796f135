"""Journal entries: the inferred undo, the created resource, bounded and redacted bodies."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from gateway.core.body import FORM, JSON
from gateway.core.journal import (
    capture_path,
    infer_undo,
    prior_value,
    store_body,
    undo_for_created,
)
from gateway.core.policy.schema import Rule
from gateway.core.redact import REDACTED


def rule(**fields: Any) -> Rule:
    return Rule.model_validate({"id": "r", "action": "allow", **fields})


PLAIN = rule(match={"path": "/customers/{id}"})
PRIOR = {"id": "c1", "name": "Ada", "plan": "pro"}


def undo(method: str, path: str, body: Any = None, content_type: str = JSON) -> dict[str, Any]:
    return {"method": method, "path": path, "body": body, "content_type": content_type}


# --- inferred undo ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("rule_", "method", "path", "params", "prior", "status", "sent", "ctype", "expected"), [
        # PUT/PATCH -> PUT the prior state to the same path
        (PLAIN, "PUT", "/customers/c1", {"id": "c1"}, PRIOR, 200, {"name": "B"}, JSON,
         (undo("PUT", "/customers/c1", PRIOR), True)),
        (PLAIN, "PATCH", "/customers/c1", {"id": "c1"}, PRIOR, 200, {"plan": "free"},
         "application/json; charset=utf-8", (undo("PUT", "/customers/c1", PRIOR), True)),
        (None, "PATCH", "/customers/c1", {}, PRIOR, 204, {}, None,
         (undo("PUT", "/customers/c1", PRIOR), True)),
        # redacted fields of the prior are never sent back as "[REDACTED]"
        (PLAIN, "PUT", "/customers/c1", {"id": "c1"}, {"name": "Ada", "api_key": REDACTED}, 200,
         {}, JSON, (undo("PUT", "/customers/c1", {"name": "Ada"}), True)),
        # absent before (404/410) -> DELETE what the PUT created
        (PLAIN, "PUT", "/customers/c9", {"id": "c9"}, None, 404, {"name": "N"}, JSON,
         (undo("DELETE", "/customers/c9"), True)),
        (PLAIN, "PATCH", "/customers/c9", {"id": "c9"}, None, 410, {}, JSON,
         (undo("DELETE", "/customers/c9"), True)),
        # nothing captured, or a prior that is not an object: irreversible
        (PLAIN, "PUT", "/customers/c1", {"id": "c1"}, None, None, {}, JSON, (None, False)),
        (PLAIN, "PUT", "/customers/c1", {"id": "c1"}, "plain text", 200, {}, JSON,
         (None, False)),
        (PLAIN, "PUT", "/customers/c1", {"id": "c1"}, [1, 2], 200, {}, JSON, (None, False)),
        # DELETE -> POST the prior state to the parent collection
        (PLAIN, "DELETE", "/customers/c1", {"id": "c1"}, PRIOR, 200, None, None,
         (undo("POST", "/customers", PRIOR), True)),
        (PLAIN, "DELETE", "/customers/c1/", {"id": "c1"}, PRIOR, 200, None, None,
         (undo("POST", "/customers", PRIOR), True)),
        (None, "DELETE", "/c1", {}, PRIOR, 200, None, None, (undo("POST", "/", PRIOR), True)),
        (PLAIN, "DELETE", "/customers/c1", {"id": "c1"}, None, 404, None, None, (None, False)),
        # POST to a collection: completed later from the response
        (None, "POST", "/customers", {}, None, None, {"name": "N"}, JSON, (None, False)),
        # form content type is carried into the undo
        (PLAIN, "PUT", "/customers/c1", {"id": "c1"}, PRIOR, 200, {"name": "B"},
         "application/x-www-form-urlencoded; charset=utf-8",
         (undo("PUT", "/customers/c1", PRIOR, FORM), True)),
        (PLAIN, "DELETE", "/customers/c1", {"id": "c1"}, PRIOR, 200, None, FORM,
         (undo("POST", "/customers", PRIOR, FORM), True)),
        # an unknown method has no inverse
        (None, "OPTIONS", "/customers", {}, None, None, None, None, (None, False)),
    ])
def test_infer_undo(rule_: Rule | None, method: str, path: str, params: dict[str, str],
                    prior: Any, status: int | None, sent: Any, ctype: str | None,
                    expected: tuple[dict[str, Any] | None, bool]) -> None:
    assert infer_undo(rule_, method, path, params, prior, status, sent, ctype) == expected


POST_CAPTURE = rule(match={"methods": ["POST"], "path": "/v1/customers/{customer}"},
                    capture={"path": "/v1/customers/{customer}"})


@pytest.mark.parametrize(("sent", "ctype", "expected"), [
    ({"name": "New"}, FORM, (undo("POST", "/v1/customers/c1", {"name": "Ada"}, FORM), True)),
    ({"name": "New", "plan": "free"}, JSON,
     (undo("POST", "/v1/customers/c1", {"name": "Ada", "plan": "pro"}), True)),
    ({"new_field": "x"}, JSON, (undo("POST", "/v1/customers/c1", {"new_field": None}), True)),
])
def test_post_with_capture_sends_back_the_prior_values_of_the_sent_fields(
        sent: Any, ctype: str, expected: Any) -> None:
    got = infer_undo(POST_CAPTURE, "POST", "/v1/customers/c1", {"customer": "c1"}, PRIOR, 200,
                     sent, ctype)
    assert got == expected


def test_post_with_capture_but_nothing_captured_is_irreversible() -> None:
    assert infer_undo(POST_CAPTURE, "POST", "/v1/customers/c1", {"customer": "c1"}, None, 404,
                      {"name": "x"}, FORM) == (None, False)


@pytest.mark.parametrize(("spec", "prior", "status", "sent", "expected"), [
    ({"method": "post", "path": "/v1/c/{id}", "body": "prior"}, PRIOR, 200, {"name": "x"},
     (undo("POST", "/v1/c/c1", PRIOR), True)),
    ({"method": "POST", "path": "/v1/c/{id}", "body": "prior"},
     {"name": "Ada", "secret": REDACTED}, 200, {}, (undo("POST", "/v1/c/c1", {"name": "Ada"}), True)),
    ({"method": "POST", "path": "/v1/c/{id}", "body": "prior_fields"}, PRIOR, 200,
     {"name": "x", "unknown": 1},  # a field the prior lacked is unset (null)
     (undo("POST", "/v1/c/c1", {"name": "Ada", "unknown": None}), True)),
    ({"method": "POST", "path": "/v1/c/{id}", "body": "prior_fields"},
     {"name": "Ada", "password": REDACTED}, 200, {"name": "x", "password": "p"},
     (undo("POST", "/v1/c/c1", {"name": "Ada"}), True)),
    ({"method": "PATCH", "path": "/v1/c/{id}", "body": {"status": "active"}}, None, None, {},
     (undo("PATCH", "/v1/c/c1", {"status": "active"}), True)),
    ({"method": "DELETE", "path": "/v1/c/{id}"}, None, None, {},
     (undo("DELETE", "/v1/c/c1"), True)),
    ({"method": "POST", "path": "/v1/c/{id}/restore"}, None, None, {},
     (undo("POST", "/v1/c/c1/restore"), True)),
    # prior / prior_fields without a JSON prior: the undo cannot be built
    ({"method": "POST", "path": "/v1/c/{id}", "body": "prior"}, None, 404, {}, (None, False)),
    ({"method": "POST", "path": "/v1/c/{id}", "body": "prior_fields"}, None, None, {"a": 1},
     (None, False)),
    ({"method": "PUT", "path": "/v1/c/{id}", "body": "prior"}, "hello\nworld\n", 200, {},
     (None, False)),  # a text prior would come back as a JSON string: refuse instead
])
def test_undo_override(spec: dict[str, Any], prior: Any, status: int | None, sent: Any,
                       expected: Any) -> None:
    r = rule(match={"methods": ["POST", "DELETE", "PUT"], "path": "/v1/c/{id}"}, undo=spec)
    assert infer_undo(r, "POST", "/v1/c/c1", {"id": "c1"}, prior, status, sent, JSON) == expected


def test_undo_override_carries_the_form_content_type() -> None:
    r = rule(match={"path": "/v1/c/{id}"},
             undo={"method": "POST", "path": "/v1/c/{id}", "body": "prior_fields"})
    got = infer_undo(r, "POST", "/v1/c/c1", {"id": "c1"}, PRIOR, 200, {"plan": "x"}, FORM)
    assert got == (undo("POST", "/v1/c/c1", {"plan": "pro"}, FORM), True)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "POST"])
def test_undo_none_is_irreversible(method: str) -> None:
    r = rule(match={"path": "/customers/{id}"}, undo="none")
    assert infer_undo(r, method, "/customers/c1", {"id": "c1"}, PRIOR, 200, {"a": 1}, JSON) \
        == (None, False)


# A secret nested in the prior comes back from the capture as "[REDACTED]"; sending that
# literal back would overwrite the real secret upstream. No undo body may contain it.
@pytest.mark.parametrize(("method", "spec"), [
    ("PUT", None),
    ("DELETE", None),
    ("POST", {"method": "POST", "path": "/customers/{id}", "body": "prior"}),
    ("POST", {"method": "POST", "path": "/customers/{id}", "body": "prior_fields"}),
])
def test_no_undo_body_ever_contains_the_redaction_marker(method: str,
                                                         spec: dict[str, Any] | None) -> None:
    r = rule(match={"path": "/customers/{id}"}, **({"undo": spec} if spec else {}))
    prior = {"name": "Ada", "settings": {"api_key": REDACTED, "theme": "dark"},
             "keys": [REDACTED, {"token": REDACTED}]}
    sent = {"name": "x", "settings": {"theme": "light"}, "keys": []}
    got, _ = infer_undo(r, method, "/customers/c1", {"id": "c1"}, prior, 200, sent, JSON)
    assert got is not None
    assert REDACTED not in json.dumps(got["body"])
    assert got["body"]["name"] == "Ada"
    assert got["body"]["settings"] == {"theme": "dark"}  # only the marker goes


# --- capture path -----------------------------------------------------------------------------

@pytest.mark.parametrize(("rule_", "method", "path", "params", "expected"), [
    (None, "PUT", "/c/1", {}, "/c/1"),
    (None, "PATCH", "/c/1", {}, "/c/1"),
    (None, "DELETE", "/c/1", {}, "/c/1"),
    (None, "POST", "/c", {}, None),
    (PLAIN, "PATCH", "/customers/1", {"id": "1"}, "/customers/1"),
    (rule(match={"path": "/customers/{id}"}, capture=False), "PUT", "/customers/1", {"id": "1"},
     None),
    (POST_CAPTURE, "POST", "/v1/customers/c1", {"customer": "c1"}, "/v1/customers/c1"),
    (rule(match={"path": "/notes/{id}"}, capture={"path": "/notes/{id}/full"}), "PATCH",
     "/notes/n1", {"id": "n1"}, "/notes/n1/full"),
])
def test_capture_path(rule_: Rule | None, method: str, path: str, params: dict[str, str],
                      expected: str | None) -> None:
    assert capture_path(rule_, method, path, params) == expected


# --- the resource a POST created --------------------------------------------------------------

@pytest.mark.parametrize(("path", "base", "status", "headers", "body", "expected"), [
    # Location: absolute URL, relative path, under the upstream's base path
    ("/customers", "", 201, {"location": "http://crm.example/customers/c9"}, None,
     "/customers/c9"),
    ("/customers", "", 201, {"location": "/customers/c9?expand=1"}, None, "/customers/c9"),
    ("/customers", "/api/v2", 201, {"location": "https://crm.example/api/v2/customers/c9"},
     None, "/customers/c9"),
    ("/customers", "/api/v2", 201, {"location": "/api/v2/customers/c9"}, None,
     "/customers/c9"),
    ("/customers", "/api", 201, {"location": "/apiv2/customers/c9"}, None,
     "/apiv2/customers/c9"),  # only a whole-segment prefix is the base path
    ("/customers", "", 201, {"location": "/customers/c9"}, {"id": "other"}, "/customers/c9"),
    # else the body's id
    ("/customers", "", 200, {}, {"id": "c9", "name": "N"}, "/customers/c9"),
    ("/customers/", "", 201, {}, {"id": 42}, "/customers/42"),
])
def test_undo_for_created(path: str, base: str, status: int, headers: dict[str, str], body: Any,
                          expected: str) -> None:
    assert undo_for_created(path, base, status, headers, body) == undo("DELETE", expected)


@pytest.mark.parametrize(("status", "headers", "body"), [
    (400, {"location": "/customers/c9"}, {"id": "c9"}),  # not created
    (500, {}, {"id": "c9"}),
    (302, {"location": "/login"}, None),
    (201, {}, None),
    (201, {}, {"name": "no id"}),
    (201, {}, {"id": None}),
    (201, {}, {"id": {"nested": 1}}),
    (201, {}, [{"id": "c9"}]),
])
def test_undo_for_created_needs_a_2xx_and_a_location_or_id(status: int, headers: dict[str, str],
                                                           body: Any) -> None:
    assert undo_for_created("/customers", "", status, headers, body) is None


# --- bodies -----------------------------------------------------------------------------------

def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(("body", "content_type", "limit", "text"), [
    (b'{"user": "ada", "password": "hunter2"}', JSON, 1000,
     '{"user":"ada","password":"[REDACTED]"}'),
    (b'{"nested": {"token": "t"}, "n": [1]}', "application/json; charset=utf-8", 1000,
     '{"nested":{"token":"[REDACTED]"},"n":[1]}'),
    (b'{"password": "x"}', None, 1000, '{"password":"[REDACTED]"}'),
    (b"amount=100&password=hunter2", FORM, 1000, "amount=100&password=%5BREDACTED%5D"),
    (b"hello", "text/plain", 1000, "hello"),
    (b"<p>hi</p>", "text/html", 1000, "<p>hi</p>"),
    (b"0123456789", "text/plain", 4, "0123"),            # bounded
    (b'{"a": "0123456789"}', JSON, 8, '{"a":"01'),      # bounded after redaction
    ("é".encode() * 3, "text/plain", 3, "é"),            # never half a character
    (b"\x00\x01\x02", "application/octet-stream", 1000, None),  # binary: hash and size only
])
def test_store_body(body: bytes, content_type: str | None, limit: int, text: str | None) -> None:
    stored = store_body(body, content_type, limit)
    assert stored.text == text
    assert stored.sha256 == sha(body)   # the hash and size always cover the original body
    assert stored.size == len(body)


def test_store_body_empty() -> None:
    stored = store_body(b"", JSON, 100)
    assert (stored.text, stored.sha256, stored.size) == (None, None, 0)


@pytest.mark.parametrize(("content_type", "body"), [
    (JSON, json.dumps({"password": "hunter2", "pad": "x" * 5000}).encode()),
    (JSON, json.dumps({"pad": "x" * 10, "api_key": "hunter2", "more": "y" * 5000}).encode()),
    (FORM, b"password=hunter2&pad=" + b"x" * 5000),
])
def test_store_body_never_keeps_a_secret_even_when_truncated(content_type: str,
                                                             body: bytes) -> None:
    stored = store_body(body, content_type, 100)
    assert stored.text is not None
    assert "hunter2" not in stored.text
    assert len(stored.text.encode()) <= 100
    assert stored.size == len(body)


@pytest.mark.parametrize(("body", "status", "expected"), [
    (b'{"id": "c1", "token": "t"}', 200, {"id": "c1", "token": REDACTED}),
    (b"[1, 2]", 200, [1, 2]),
    (b"plain text", 200, "plain text"),
    (b'{"id": "c1"}', 404, None),
    (b'{"error": "gone"}', 410, None),
    (b"", 200, None),
])
def test_prior_value(body: bytes, status: int, expected: Any) -> None:
    assert prior_value(body, status) == expected


def test_undo_omits_read_only_fields_at_any_depth() -> None:
    """HubSpot's PATCH sends {"properties": {...}}: prior_fields takes the whole prior
    ``properties``, and HubSpot refuses hs_object_id and createdate in it."""
    spec = rule(match={"path": "/contacts/{id}"},
                undo={"method": "PATCH", "path": "/contacts/{id}", "body": "prior_fields",
                      "omit": ["properties.hs_object_id", "properties.createdate", "id"]})
    prior = {"id": "5", "properties": {"lifecyclestage": "lead", "hs_object_id": "5",
                                       "createdate": "2026-01-01"}}
    undo, reversible = infer_undo(spec, "PATCH", "/contacts/5", {"id": "5"}, prior, 200,
                                  {"properties": {"lifecyclestage": "customer"}, "id": "5"}, JSON)
    assert reversible
    assert undo == {"method": "PATCH", "path": "/contacts/5", "content_type": JSON,
                    "body": {"properties": {"lifecyclestage": "lead"}}}


def test_an_explicit_put_of_the_prior_deletes_what_was_absent() -> None:
    spec = rule(match={"path": "/{bucket}/{key+}"},
                undo={"method": "PUT", "path": "/{bucket}/{key+}", "body": "prior"})
    params = {"bucket": "b", "key": "a/b.bin"}
    undo, reversible = infer_undo(spec, "POST", "/b/a/b.bin", params, None, 404, None, None)
    assert reversible
    assert (undo or {})["method"] == "DELETE" and (undo or {})["path"] == "/b/a/b.bin"
