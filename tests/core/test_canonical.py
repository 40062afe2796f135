"""gateway.core.canonical: one row per spelling (pure, milliseconds)."""

from __future__ import annotations

import pytest

from gateway.core.canonical import fold, method_override, repeated_header, respelt_header, target
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


@pytest.mark.parametrize(("query", "found"), [("_method=DELETE", "_method"),
                                              ("a=1&_METHOD=put", "_METHOD"),
                                              ("%5Fmethod=PUT", "_method"),
                                              ("method=x", None), ("", None),
                                              ("payment_method=card", None)])
def test_method_override_in_query(query: str, found: str | None) -> None:
    assert method_override(query) == found


@pytest.mark.parametrize(("headers", "repeated"), [
    ([("x-amz-target", "A.Delete"), ("X-Amz-Target", "A.Describe")], "x-amz-target"),
    ([("accept", "*/*"), ("x-a", "1"), ("accept", "*/*")], "accept"),
    ([("x-amz-target", "A.Describe"), ("X_Amz_Target", "A.Delete")], "x-amz-target"),
    ([("x-a", "1"), ("x-b", "1")], None),
    ([], None),
])
def test_repeated_header(headers: list[tuple[str, str]], repeated: str | None) -> None:
    assert repeated_header(headers) == repeated


@pytest.mark.parametrize(("headers", "judged", "respelt"), [
    ([("x_force", "true")], frozenset({"x-force"}), "x_force"),
    ([("x-force", "true")], frozenset({"x-force"}), None),
    ([("debug-mode", "1")], frozenset({"debug_mode"}), "debug-mode"),
    ([("x_trace", "1")], frozenset({"x-force"}), None),  # no rule reads it
    ([("x_trace", "1")], None, "x_trace"),  # read without names: any '_' is suspect
    ([("x-trace", "1")], None, None),
    ([("x_a", "1")], frozenset(), None),
])
def test_respelt_header(headers: list[tuple[str, str]], judged: frozenset[str] | None,
                        respelt: str | None) -> None:
    assert respelt_header(headers, judged) == respelt
