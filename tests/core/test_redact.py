"""Secrets are hidden by name before anything is stored."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.core.mcp import failure, redact_answer
from gateway.core.policy.compiled import Credential
from gateway.core.redact import (
    REDACTED,
    Echoes,
    is_secret_name,
    redact_form,
    redact_headers,
    redact_json,
    redact_query,
    redact_text,
    redacted_body,
)


@pytest.mark.parametrize(("name", "secret"), [
    ("Authorization", True),
    ("proxy-authorization", True),
    ("Cookie", True),
    ("set-cookie", True),
    ("X-API-Key", True),
    ("x-gateway-key", True),
    ("x-csrf-token", True),
    ("password", True),
    ("passwd", True),
    ("passphrase", True),
    ("client_secret", True),
    ("refresh_token", True),
    ("apiKey", True),
    ("api_key", True),
    ("auth", True),
    ("credentials", True),
    ("private_key", True),
    ("session_id", True),
    ("Stripe-Signature", True),
    ("cvc", True),
    ("card_number", True),
    ("pin", True),
    ("ssn", True),
    # not secrets
    ("accept", False),
    ("content-type", False),
    ("author", False),
    ("email", False),
    ("pinned", False),
    ("amount", False),
    ("id", False),
    ("key", False),
])
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Authorization": "Bearer x", "Accept": "*/*"},
     {"authorization": REDACTED, "accept": "*/*"}),
    ([("X-Gateway-Key", "k"), ("Content-Type", "application/json")],
     {"x-gateway-key": REDACTED, "content-type": "application/json"}),
    ([("Set-Cookie", "a=1"), ("X-Request-Id", "r1")],
     {"set-cookie": REDACTED, "x-request-id": "r1"}),
    ({}, {}),
])
def test_redact_headers(headers: Any, expected: dict[str, str]) -> None:
    assert redact_headers(headers) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ({"user": "ada", "password": "hunter2"}, {"user": "ada", "password": REDACTED}),
    ({"nested": [{"api_key": "k", "n": 1}]}, {"nested": [{"api_key": REDACTED, "n": 1}]}),
    ({"card": {"number": "4242", "cvc": "123"}}, {"card": {"number": "4242", "cvc": REDACTED}}),
    ({"token": {"a": 1}}, {"token": REDACTED}),   # the whole value goes, whatever its type
    ([{"secret": 1}, 2, "x"], [{"secret": REDACTED}, 2, "x"]),
    ({1: "a"}, {1: "a"}),
    ("password", "password"),                       # a value, not a name
    (None, None),
    (42, 42),
])
def test_redact_json(value: Any, expected: Any) -> None:
    assert redact_json(value) == expected


def test_redact_json_does_not_modify_its_input() -> None:
    value = {"password": "p", "nested": {"token": "t"}}
    redact_json(value)
    assert value == {"password": "p", "nested": {"token": "t"}}


@pytest.mark.parametrize(("text", "expected"), [
    ("amount=100&password=hunter2", "amount=100&password=%5BREDACTED%5D"),
    # bracket keys (Stripe's card[cvc]) are the form spelling of nested JSON {"card": {"cvc"}},
    # which redact_json hides: the form must hide it too
    ("card%5Bcvc%5D=123&card%5Bexp_year%5D=30",
     "card%5Bcvc%5D=%5BREDACTED%5D&card%5Bexp_year%5D=30"),
    ("metadata%5Bpassword%5D=p", "metadata%5Bpassword%5D=%5BREDACTED%5D"),
    ("a=1&a=2&token=x", "a=1&a=2&token=%5BREDACTED%5D"),
    ("empty=&api_key=", "empty=&api_key=%5BREDACTED%5D"),
    ("", ""),
])
def test_redact_form(text: str, expected: str) -> None:
    assert redact_form(text) == expected


def test_redact_form_keeps_no_secret_value() -> None:
    assert "hunter2" not in redact_form("user=ada&client_secret=hunter2&x=1")


@pytest.mark.parametrize(("query", "expected"), [
    ("", ""),
    ("limit=10", "limit=10"),
    ("access_token=abc&limit=10", "access_token=%5BREDACTED%5D&limit=10"),
])
def test_redact_query(query: str, expected: str) -> None:
    assert redact_query(query) == expected


# (body, content type, what views show): held-call bodies as operators and webhooks see them
@pytest.mark.parametrize(("body", "content_type", "shown"), [
    (b'{"a":1,"password":"p"}', "application/json", b'{"a":1,"password":"[REDACTED]"}'),
    (b'{"x":{"client_secret":"s"}}', "application/vnd.api+json",
     b'{"x":{"client_secret":"[REDACTED]"}}'),
    (b'{"token":"t"}', None, b'{"token":"[REDACTED]"}'),  # JSON without a content type
    (b"password=p&plan=pro", "application/x-www-form-urlencoded",
     b"password=%5BREDACTED%5D&plan=pro"),
    (b"card[cvc]=123&n=1", "application/x-www-form-urlencoded; charset=utf-8",
     b"card%5Bcvc%5D=%5BREDACTED%5D&n=1"),
    (b"plain words", "text/plain", b"plain words"),
    (b"\x89PNG\x00\xff", "image/png", b""),  # binary: not shown (sealed for the approval)
    (b"", "application/json", b""),
])
def test_redacted_body(body: bytes, content_type: str | None, shown: bytes) -> None:
    assert redacted_body(body, content_type) == shown


TEXTS = [  # (a tool's text result, as journaled)
    ('{"id": "k1", "api_key": "sk-1"}', '{"id": "k1", "api_key": "[REDACTED]"}'),
    ('[{"password": "p"}]', '[{"password": "[REDACTED]"}]'),
    ('{"id": "k1"}', '{"id": "k1"}'),  # nothing secret: the text as it was
    ("token=sk-1&page=2", "token=[REDACTED]&page=2"),
    ("rotated; api_key: sk-1, id: k1", "rotated; api_key: [REDACTED], id: k1"),
    ('"client_secret": "s"', '"client_secret": "[REDACTED]"'),
    ("plain words, no secrets", "plain words, no secrets"),
    ("42", "42"),
]


@pytest.mark.parametrize(("text", "journaled"), TEXTS)
def test_redact_text(text: str, journaled: str) -> None:
    assert redact_text(text) == journaled


def test_a_tool_answer_is_journaled_with_its_texts_redacted() -> None:
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"content": [
        {"type": "text", "text": '{"api_key": "sk-1"}'}, {"type": "image", "data": "x"}]}}
    shown = redact_answer(answer)
    assert shown is not None
    assert shown["result"]["content"] == [{"type": "text", "text": '{"api_key": "[REDACTED]"}'},
                                          {"type": "image", "data": "x"}]
    assert answer["result"]["content"][0]["text"] == '{"api_key": "sk-1"}'  # not modified
    assert redact_answer(None) is None and redact_answer({"error": {}}) == {"error": {}}


def test_a_tool_error_is_quoted_without_the_secrets_it_repeats() -> None:
    """The server's words name no secret: by name, nor the call's secret arguments."""
    sent = {"id": "a1", "auth": {"password": "hunter2", "pin": 4321}, "note": "hunter"}
    said = "hunter2 (pin 4321) refused for a1; api_key=sk-9"
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": said}}
    tool = {"jsonrpc": "2.0", "id": 1,
            "result": {"content": [{"type": "text", "text": said}], "isError": True}}
    quoted = "[REDACTED] (pin [REDACTED]) refused for a1; api_key=[REDACTED]"
    assert failure(error, sent) == f"JSON-RPC error -32000: {quoted}"
    assert failure(tool, sent) == f"the tool reported an error: {quoted}"
    assert redact_answer(error, sent) == {**error, "error": {"code": -32000, "message": quoted}}
    assert redact_answer(tool, sent)["result"]["content"][0]["text"] == quoted  # type: ignore[index]
    assert failure(tool) == "the tool reported an error: hunter2 (pin 4321) refused for a1; " \
        "api_key=[REDACTED]"  # nothing sent: by name only


SECRET = "s3cr/t k"
ECHOED = [
    # (row id, what the upstream answered, what is shown)
    ("as-sent", "key=s3cr/t k;", "key=[REDACTED];"),
    ("percent-encoded", "/x?api_key=s3cr%2Ft%20k&p=2", "/x?api_key=[REDACTED]&p=2"),
    ("lower-hex", "/x?api_key=s3cr%2ft%20k", "/x?api_key=[REDACTED]"),
    ("plus-for-space", "/x?api_key=s3cr%2Ft+k", "/x?api_key=[REDACTED]"),
    ("slash-kept", "/x?api_key=s3cr/t%20k", "/x?api_key=[REDACTED]"),
    ("json-escaped", '{"next": "s3cr\\/t k"}', '{"next": "[REDACTED]"}'),
    ("twice", "s3cr/t ks3cr/t k", "[REDACTED][REDACTED]"),
    ("a prefix only", "s3cr/t", "s3cr/t"),
    ("nothing", "plain", "plain"),
]


@pytest.mark.parametrize(("text", "shown"), [r[1:] for r in ECHOED], ids=[r[0] for r in ECHOED])
def test_an_echoed_credential_is_replaced_in_text_and_bytes(text: str, shown: str) -> None:
    echoes = Echoes([SECRET])
    assert echoes.text(text) == shown
    assert echoes.body(text.encode()) == shown.encode()
    assert echoes.headers([("location", text)]) == [("location", shown)]
    assert echoes.value({text: [text, 1, None]}) == {shown: [shown, 1, None]}


@pytest.mark.parametrize(("text", "shown"), [r[1:] for r in ECHOED], ids=[r[0] for r in ECHOED])
def test_an_echo_split_anywhere_in_a_stream_is_replaced(text: str, shown: str) -> None:
    data = ("data: " + text + "\n\n").encode()
    for cut in range(len(data) + 1):
        for second in range(cut, len(data) + 1):  # three chunks, split at every two places
            stream = Echoes([SECRET]).stream()
            out = [stream.feed(data[:cut]), stream.feed(data[cut:second]),
                   stream.feed(data[second:]), stream.end()]
            assert b"".join(out) == ("data: " + shown + "\n\n").encode(), (cut, second)


def test_a_stream_holds_back_only_what_may_begin_a_secret() -> None:
    stream = Echoes(["secret"]).stream()
    assert stream.feed(b"event one\n\n") == b"event one\n\n"  # nothing waits: SSE flows
    assert stream.feed(b"x=se") == b"x="  # "se" may begin it
    assert stream.feed(b"ap\n") == b"seap\n"  # it did not
    assert stream.feed(b"secre") == b""
    assert stream.end() == b"secre"  # the stream ended: not the secret


def test_the_credential_values_that_go_on_the_wire() -> None:
    assert Credential(headers=(("authorization", "Bearer tok"),)).sent == ("Bearer tok", "tok")
    assert Credential(query=("api_key", "k")).sent == ("k",)
    assert Credential(headers=(("x-key", ""),)).sent == ()
    with pytest.raises(ValueError):
        Echoes([""])


def test_a_value_too_short_to_replace_is_left_and_named() -> None:
    """A few characters occur by chance everywhere: only longer values are replaced."""
    echoes = Echoes(["ab", "Token ab"])
    assert echoes.text("a table; Token ab") == "a table; [REDACTED]"
    with pytest.raises(ValueError, match="at least 4"):
        Echoes(["abc"])
    assert Credential(headers=(("x-key", "Token ab"),)).unhidden is not None
    assert "ab" not in (Credential(query=("k", "ab")).unhidden or "").split()
    assert Credential(headers=(("x-key", "Token abcd"),)).unhidden is None


@pytest.mark.parametrize("lead", [b"", b"x", b"xy", b"Basic:", b"\xff\x00\x10"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_a_secret_inside_base64_is_hidden_at_any_offset(lead: bytes, encode: Any) -> None:
    """Wherever it sits in an encoded value, no decoding of what is left shows it."""
    secret = "s3cr/t?>~~k"  # bytes that encode to + and / (- and _ URL-safe)
    for tail in (b"", b"!", b"?>", b"..."):
        encoded = encode(lead + secret.encode() + tail).decode()
        shown = Echoes([secret]).text(f'{{"blob": "{encoded}"}}')
        assert "[REDACTED]" in shown, (lead, tail)
        left = shown.split('"')[3].split("[REDACTED]")
        assert all(secret.encode() not in _decoded(part) for part in left)
    assert Echoes(["shortpw"]).text(base64.b64encode(b"shortpw").decode()) == "c2hvcnRwdw=="


def _decoded(part: str) -> bytes:
    raw = part.replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(raw[:len(raw) - len(raw) % 4] or b"")
