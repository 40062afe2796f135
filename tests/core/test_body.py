"""gateway.core.body: one reading of a body or a query, or ``Ambiguous`` (pure, milliseconds)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest

from gateway.core.body import (
    FORM,
    JSON,
    fields,
    form_override,
    is_json_type,
    json_body,
    media_type,
    named_twice,
    named_twice_aws,
    parse_body,
)
from gateway.errors import Ambiguous

BODIES: list[tuple[bytes, str | None]] = [
    (b'{"a":1,"a":2}', JSON), (b'{"a":1,"\\u0061":2}', JSON), (b'{"a":1,"A":2}', JSON),
    (b'{"a\\u0000":1}', JSON), (b'{"a":"\\ud800"}', JSON), (b'{"a":"\\udc00x"}', JSON),
    (b"[" * 65 + b"]" * 65, JSON), (b"[" * 5000 + b"]" * 5000, JSON), (b'{"a":1e309}', JSON),
    (b'{"a":-1e309}', JSON), (b'{"a":1' + b"0" * 309 + b"}", JSON),
    (b'{"a":1' + b"0" * 5000 + b"}", JSON), (b'{"a":NaN}', JSON), (b'{"a":-Infinity}', JSON),
    (b'{"a":', JSON), (b'\xff', JSON), (b'{"a":1,"a":2}', "text/plain"),
    (b'{"a":1,"a":2}', None), (b'{"x":{"k":1,"K":2}}', "application/vnd.api+json"),
    (b'{"_method":"DELETE"}', JSON), (b'{"a":[{"_METHOD":"PUT"}]}', JSON),
    (b"a=1&a=2", FORM), (b"a=1&A=2", FORM), (b"a=1&a[]=2", FORM), (b"a=1;a=2", FORM),
]


@pytest.mark.parametrize(("body", "content_type"), BODIES)
def test_json_with_two_readings(body: bytes, content_type: str | None) -> None:
    with pytest.raises(Ambiguous):
        json_body(body, content_type)


PARSED: list[tuple[bytes, str | None, Any]] = [
    (b"", JSON, None), (b'{"a":1}', JSON, {"a": 1}), (b"[" * 64 + b"]" * 64, JSON,
                                                       json_body(b"[" * 64 + b"]" * 64, None)),
    (b'{"a":"\\ud83d\\ude00"}', JSON, {"a": "😀"}), (b'{"a":1.5e308}', JSON, {"a": 1.5e308}),
    (b"a=1&b=2", "application/x-www-form-urlencoded", {"a": "1", "b": "2"}),
    (b"hello", "text/plain", None), (b"\xff\xfe", "application/octet-stream", None),
    (b'{"a":', "text/plain", None),
]


@pytest.mark.parametrize(("body", "content_type", "value"), PARSED)
def test_json_with_one_reading(body: bytes, content_type: str | None, value: Any) -> None:
    assert json_body(body, content_type) == value


def test_method_override_in_form() -> None:
    assert form_override({"_method": "DELETE"}) and not form_override({"method": "x"})


EXACT = [  # (body, survives a double)
    (b'{"a":1000.0000000000000001}', False), (b'{"a":9007199254740993}', False),
    (b'{"a":0.30000000000000004}', True), (b'{"a":0.1}', True), (b'{"a":1000.00}', True),
    (b'{"a":1e3}', True), (b'{"a":9007199254740992}', True), (b'{"a":-0.0}', True),
]


@pytest.mark.parametrize(("body", "survives"), EXACT)
def test_numbers_a_when_compares_survive_a_double(body: bytes, survives: bool) -> None:
    assert json_body(body, JSON) is not None  # not compared: read as it is
    if survives:
        assert json_body(body, JSON, exact=True) == json_body(body, JSON)
    else:
        with pytest.raises(Ambiguous):
            json_body(body, JSON, exact=True)


FIELDS = [  # (text, the reading with aliases, or None: ambiguous)
    ("a=1&a=2", None), ("a=1&%61=2", None), ("force=1&Force=1", None), ("a=1&a[]=2", None),
    ("a[]=1&a%5B%5D=2", None), ("x=1;force=1", None), ("+force=1", None), ("force+=1", None),
    ("%20a=1", None), ("ı=1&I=2", None),
    ("", {}), ("a=1&b=2", {"a": "1", "b": "2"}), ("a&b=", {"a": "", "b": ""}),
    ("Force=1", {"Force": "1", "force": "1"}), ("force[]=1", {"force[]": "1", "force": "1"}),
    ("q=a%3Bb", {"q": "a;b"}), ("pageSize=2", {"pageSize": "2", "pagesize": "2"}),
    ("force[x]=1", {"force[x]": "1", "force": "1"}),
    ("metadata[a]=1&metadata[b]=2", {"metadata[a]": "1", "metadata[b]": "2", "metadata": "1"}),
]


@pytest.mark.parametrize(("text", "reading"), FIELDS)
def test_fields(text: str, reading: dict[str, str] | None) -> None:
    if reading is None:
        with pytest.raises(Ambiguous):
            fields(text, "query")
    else:
        assert fields(text, "query", aliases=True) == reading
        assert fields(text, "query") == dict(parse_qsl(text, keep_blank_values=True))


@pytest.mark.parametrize(("content_type", "media", "is_json"), [
    ("application/json", JSON, True),
    ("Application/JSON; charset=utf-8", JSON, True),
    ("application/vnd.api+json", "application/vnd.api+json", True),
    (f"{FORM}; charset=utf-8", FORM, False),
    ("text/plain", "text/plain", False),
    (None, "", False),
])
def test_media_type(content_type: str | None, media: str, is_json: bool) -> None:
    assert media_type(content_type) == media
    assert is_json_type(content_type) is is_json


@pytest.mark.parametrize(("body", "content_type", "expected"), [
    (b'{"a": 1}', JSON, {"a": 1}),
    (b'{"a": 1}', None, {"a": 1}),
    (b"[1, 2]", JSON, [1, 2]),
    (b"a=1&b=&c=x+y", FORM, {"a": "1", "b": "", "c": "x y"}),
    (b"not json", JSON, None),
    (b"\xff\xfe", JSON, None),
    (b"", JSON, None),
])
def test_parse_body(body: bytes, content_type: str | None, expected: Any) -> None:
    assert parse_body(body, content_type) == expected


def test_a_bom_led_body_reads_as_json_loads_reads_text_with_one() -> None:
    """The decoders are built once; json.loads's own check of a BOM in text is kept."""
    with pytest.raises(Ambiguous, match="BOM"):
        json_body(b'\xef\xbb\xbf{"a": 1}', "application/json")
    assert json_body(b'\xef\xbb\xbf{"a": 1}', None) is None
    for exact in (False, True):  # the same reader again: nothing kept from the last read
        assert json_body(b'{"a": {"b": 1}}', None, exact) == {"a": {"b": 1}}
        with pytest.raises(Ambiguous, match="duplicate"):
            json_body(b'{"a": 1, "a": 1}', None, exact)


@pytest.mark.parametrize(("query", "form", "twice"), [
    ({"Action": "DescribeInstances"}, {"Action": "TerminateInstances"}, "Action"),
    ({"Action": "DescribeInstances"}, {"action": "TerminateInstances"}, "action"),
    ({"force": "0"}, {"force[]": "1"}, "force[]"),
    ({"force": "0"}, {"Force[x]": "1"}, "Force[x]"),
    ({"Action": "DescribeInstances"}, {"InstanceId.1": "i-1"}, None),
    ({}, {"Action": "TerminateInstances"}, None),
])
def test_named_twice(query: dict[str, str], form: dict[str, str], twice: str | None) -> None:
    assert named_twice(query, form) == twice


TARGET = [("x-amz-target", "AmazonSQS.DeleteQueue")]


@pytest.mark.parametrize(("headers", "query", "body", "twice"), [
    (TARGET, {"Action": "ListQueues"}, None, True),
    (TARGET, {}, {"Action": "ListQueues"}, True),
    (TARGET, {}, {"action[]": "ListQueues"}, True),
    ([("X_Amz_Target", "AmazonSQS.DeleteQueue")], {"Action": "ListQueues"}, None, True),
    (TARGET, {}, {"QueueUrl": "q"}, False),
    ([], {"Action": "ListQueues"}, {"Action": "ListQueues"}, False),  # (named_twice's)
    (TARGET, {}, ["Action"], False),
])
def test_named_twice_aws(headers: list[tuple[str, str]], query: dict[str, str], body: object,
                         twice: bool) -> None:
    assert named_twice_aws(headers, query, body) is twice
