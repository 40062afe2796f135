"""A write's undo inferred once: the form shown and the true form, from one capture."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.core.body import JSON
from gateway.core.policy.mcp_schema import McpRule
from gateway.core.policy.schema import Rule
from gateway.core.redact import REDACTED, redact_json
from gateway.core.undo import HEADERS, RAW, Inferred, infer

PLAIN = Rule.model_validate({"id": "r", "action": "allow"})
TOOL = McpRule.model_validate({
    "id": "t", "action": "allow", "match": {"tools": ["set_plan"]},
    "capture": {"tool": "get_customer", "arguments": {"id": "{arguments.id}"}},
    "undo": {"tool": "set_plan", "arguments": "prior_fields"}})


@dataclass(frozen=True)
class Seen:
    status: int
    value: Any
    body: bytes
    content_type: str | None = JSON
    meta: tuple[tuple[str, str], ...] = ()
    true: Any = None  # not parsed by the reader: infer parses ``body``


def read(value: Any, status: int = 200, raw: bytes | None = None) -> Seen:
    body = json.dumps(value).encode() if raw is None else raw
    return Seen(status, redact_json(value), body)


def put(body: Any) -> dict[str, Any]:
    return {"method": "PUT", "path": "/customers/c1", "body": body, "content_type": JSON}


def test_nothing_captured_is_irreversible_with_nothing_true() -> None:
    assert infer(PLAIN, "PUT", "/customers/c1", {}, None, {}, JSON, 100) == Inferred(None, False)


def test_a_redacted_prior_shows_the_undo_without_the_secret_and_keeps_the_true_one_secret() -> None:
    got = infer(PLAIN, "PUT", "/customers/c1", {}, read({"name": "Ada", "api_key": "k1"}),
                {"name": "B"}, JSON, 10)  # over the limit: not the bytes as read
    assert got == Inferred(put({"name": "Ada"}), True, put({"name": "Ada", "api_key": "k1"}),
                           secret=True)


def test_a_json_prior_with_nothing_redacted_goes_back_byte_for_byte_and_is_not_secret() -> None:
    raw = b'{"name":  "Ada"}\n'
    got = infer(PLAIN, "PUT", "/customers/c1", {}, read({"name": "Ada"}, raw=raw), {}, JSON, 100)
    assert got.shown == put({"name": "Ada"}) and got.reversible and got.secret is False
    assert got.true == {**put(None), "body": {RAW: base64.b64encode(raw).decode()}}


def test_a_binary_prior_is_put_back_whole_and_secret() -> None:
    seen = Seen(200, "[3 bytes]", b"\x00\x01\x02", "application/octet-stream",
                (("x-amz-meta-a", "1"),))
    got = infer(None, "PUT", "/b/k", {}, seen, None, "application/octet-stream", 100)
    shown = {"method": "PUT", "path": "/b/k", "body": None,
             "content_type": "application/octet-stream"}
    assert got == Inferred(shown, True, {**shown, "body": {
        RAW: base64.b64encode(b"\x00\x01\x02").decode(), HEADERS: {"x-amz-meta-a": "1"}}})


def test_a_binary_prior_over_the_limit_is_irreversible_and_says_why() -> None:
    seen = Seen(200, "[5 bytes]", b"\x00\x01\x02\x03\x04", "application/octet-stream")
    got = infer(None, "PUT", "/b/k", {}, seen, None, "application/octet-stream", 4)
    assert (got.shown, got.reversible, got.true) == (None, False, None)
    assert got.irreversible_reason is not None and "over journal_body_limit (4)" in \
        got.irreversible_reason


@pytest.mark.parametrize(("prior", "secret_kept"), [
    ({"id": "c1", "plan": "pro"}, False),
    ({"id": "c1", "plan": "pro", "token": "t1"}, True),
])
def test_a_tool_undo_has_a_true_form_only_when_redaction_changed_it(
        prior: dict[str, Any], secret_kept: bool) -> None:
    got = infer(TOOL, "tools/call", "set_plan", {}, read(prior), {"id": "c1", "plan": "x",
                                                                 "token": "new"}, JSON, 100)
    assert got.reversible
    assert (got.true is not None) is secret_kept
    if secret_kept:
        assert "t1" in json.dumps(got.true) and "t1" not in json.dumps(got.shown)
        assert REDACTED not in json.dumps(got.shown) and got.secret
