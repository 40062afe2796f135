"""gateway.core.canonical: one row per spelling (pure, milliseconds)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest

from gateway.core.body import fields, form_override, json_body
from gateway.core.canonical import fold, method_override, target
from gateway.core.template import PathTrie, Template
from gateway.errors import Ambiguous

TARGETS = [
    # raw, forwarded, judged
    ("", "", "/"),
    ("/", "/", "/"),
    ("/customers/42", "/customers/42", "/customers/42"),
    ("/customers/%34%32", "/customers/42", "/customers/42"),
    ("/a%2bb", "/a+b", "/a+b"),
    ("/a%20b", "/a%20b", "/a b"),
    ("/a;b", "/a%3Bb", "/a;b"),
    ("/%C3%A9t%C3%A9", "/%C3%A9t%C3%A9", "/été"),
    ("/x/", "/x/", "/x/"),
    ("/file.json", "/file.json", "/file.json"),
    ("/admin.", "/admin.", "/admin."),  # judged by the trie against literals, not here
]


@pytest.mark.parametrize(("raw", "encoded", "decoded"), TARGETS)
def test_target(raw: str, encoded: str, decoded: str) -> None:
    got = target(raw)
    assert (got.encoded, got.decoded) == (encoded, decoded)
    assert target(got.encoded) == got  # canonical is a fixed point


AMBIGUOUS_PATHS = ["//x", "/./x", "/../x", "/%2e%2e/x", "/a%2fb", "/a%5Cb", "/a%00", "/a%0a",
                   "/a%09", "/a%7f", "/a%C2%85", "/a%E2%80%8B", "/a%E2%80%AE", "/a%ff",
                   "/%C0%AE", "/%ED%A0%80", "/a%zz", "/a%4", "/%u0061", "/%EF%BC%8F",
                   "/%EF%BC%8E%EF%BC%8E", "/%EF%BC%BC"]


@pytest.mark.parametrize("raw", AMBIGUOUS_PATHS)
def test_ambiguous_path(raw: str) -> None:
    with pytest.raises(Ambiguous):
        target(raw)


FOLDS = [("admin", "admin"), ("ADMIN", "admin"), ("admin;x", "admin"), ("admin.", "admin"),
         ("admin. .", "admin"), ("ａｄｍｉｎ", "admin"), ("ᵃdmin", "admin"),
         ("Admin;v=1.", "admin"), ("admin%", "admin%"), ("ad.min", "ad.min"),
         ("Straße", "strasse"), ("admın", "admin"), ("admİn", "admin"), ("ADMİN", "admin")]


@pytest.mark.parametrize(("segment", "key"), FOLDS)
def test_fold(segment: str, key: str) -> None:
    assert fold(segment) == key


def _trie() -> PathTrie:
    trie = PathTrie()
    trie.add(0, Template.parse("/admin/**"))
    trie.add(1, Template.parse("/customers/{id}"))
    trie.add(2, Template.parse("/**"))
    return trie


@pytest.mark.parametrize("path", ["ADMIN/x", "admin;x/y", "admin./y", "ａｄｍｉｎ/y",
                                  "Customers/1"])
def test_trie_refuses_a_spelling_of_a_literal(path: str) -> None:
    with pytest.raises(Ambiguous):
        _trie().match(path.split("/"))


@pytest.mark.parametrize(("path", "first"), [("admin/x", 0), ("customers/ADMIN", 1),
                                             ("customers/42;x", 1), ("other/ADMIN", 2)])
def test_trie_binds_variants_where_no_literal_is_at_stake(path: str, first: int) -> None:
    assert _trie().match(path.split("/"))[0][0] == first


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
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


@pytest.mark.parametrize(("query", "found"), [("_method=DELETE", "_method"),
                                              ("a=1&_METHOD=put", "_METHOD"),
                                              ("%5Fmethod=PUT", "_method"),
                                              ("method=x", None), ("", None),
                                              ("payment_method=card", None)])
def test_method_override_in_query(query: str, found: str | None) -> None:
    assert method_override(query) == found


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
