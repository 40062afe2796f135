"""Path templates: parsing, the segment trie and expansion."""

from __future__ import annotations

import pytest

from gateway.core.template import PathTrie, Template
from gateway.errors import TemplateError


@pytest.mark.parametrize(("text", "message"), [
    ("customers", "must start with '/'"),
    ("", "must start with '/'"),
    ("*", "must start with '/'"),
    ("/a/**/b", "'**' must be the last segment"),
    ("/**/**", "'**' must be the last segment"),
    ("/customers/{id}.json", "bad segment '{id}.json'"),
    ("/x/{}", "bad segment '{}'"),
    ("/x/{1a}", "bad segment '{1a}'"),
    ("/x/{a-b}", "bad segment '{a-b}'"),
    ("/x/{id", "bad segment '{id'"),
    ("/a*", "bad segment 'a*'"),
    ("/***", "bad segment '***'"),
    ("/{id}/x/{id}", "binds a name twice"),
    ("/a/../b", "empty or dot segment"),
    ("/./a", "empty or dot segment"),
    ("/a/..", "empty or dot segment"),
    ("/a//b", "empty or dot segment"),
    ("//", "empty or dot segment"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template.parse(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # pydantic validators rely on this


def test_parse_rejects_a_non_string() -> None:
    with pytest.raises(TemplateError):
        Template.parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "segments", "names"), [
    ("/", (), ()),
    ("/**", ("**",), ()),
    ("/customers", ("customers",), ()),
    ("/customers/", ("customers",), ()),  # a trailing slash is ignored
    ("/customers/{id}", ("customers", "{id}"), ("id",)),
    ("/v1/{a}/*/{b_2}/**", ("v1", "{a}", "*", "{b_2}", "**"), ("a", "b_2")),
    ("/x.json/a-b/~c", ("x.json", "a-b", "~c"), ()),
])
def test_parse_segments_and_names(text: str, segments: tuple[str, ...],
                                  names: tuple[str, ...]) -> None:
    template = Template.parse(text)
    assert template.text == text
    assert template.segments == segments
    assert template.names == names


def trie_of(*templates: str) -> PathTrie:
    trie = PathTrie()
    for index, text in enumerate(templates):
        trie.add(index, Template.parse(text))
    return trie


def segs(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


@pytest.mark.parametrize(("template", "path", "params"), [
    # literals
    ("/customers", "/customers", {}),
    ("/customers", "/orders", None),
    ("/customers", "/customers/1", None),
    ("/customers", "/", None),
    ("/", "/", {}),
    ("/", "/a", None),
    # {name}: exactly one segment, bound
    ("/customers/{id}", "/customers/42", {"id": "42"}),
    ("/customers/{id}", "/customers", None),
    ("/customers/{id}", "/customers/42/notes", None),
    ("/{a}/x/{b}", "/1/x/2", {"a": "1", "b": "2"}),
    ("/{a}/x/{b}", "/1/y/2", None),
    # *: exactly one segment, not bound
    ("/customers/*", "/customers/42", {}),
    ("/customers/*", "/customers", None),
    ("/customers/*/notes", "/customers/42/notes", {}),
    ("/*/{id}", "/c/9", {"id": "9"}),
    # **: any rest, also empty
    ("/**", "/", {}),
    ("/**", "/a/b/c", {}),
    ("/deals/**", "/deals", {}),
    ("/deals/**", "/deals/1/items/2", {}),
    ("/deals/**", "/dealsx/1", None),
    ("/deals/**", "/other", None),
    ("/c/{id}/**", "/c/7", {"id": "7"}),
    ("/c/{id}/**", "/c/7/a/b", {"id": "7"}),
    ("/c/{id}/**", "/c", None),
    # trailing slash in the template
    ("/customers/", "/customers", {}),
    ("/customers/{id}/", "/customers/3", {"id": "3"}),
])
def test_single_template_match(template: str, path: str, params: dict[str, str] | None) -> None:
    expected = [] if params is None else [(0, params)]
    assert trie_of(template).match(segs(path)) == expected


OVERLAP = trie_of(
    "/**",                      # 0
    "/customers/{id}",          # 1
    "/customers/me",            # 2
    "/customers/*",             # 3
    "/{kind}/{id}",             # 4
    "/customers/**",            # 5
    "/customers/{cid}/notes",   # 6
    "/{a}/me",                  # 7
    "/customers/{id}/**",       # 8
)


@pytest.mark.parametrize(("path", "expected"), [
    ("/customers/me", [
        (0, {}), (1, {"id": "me"}), (2, {}), (3, {}), (4, {"kind": "customers", "id": "me"}),
        (5, {}), (7, {"a": "customers"}), (8, {"id": "me"}),
    ]),
    ("/customers/42", [
        (0, {}), (1, {"id": "42"}), (3, {}), (4, {"kind": "customers", "id": "42"}), (5, {}),
        (8, {"id": "42"}),
    ]),
    ("/customers/42/notes", [
        (0, {}), (5, {}), (6, {"cid": "42"}), (8, {"id": "42"}),
    ]),
    ("/customers", [(0, {}), (5, {})]),
    ("/orders/me", [(0, {}), (4, {"kind": "orders", "id": "me"}), (7, {"a": "orders"})]),
    ("/", [(0, {})]),
])
def test_overlapping_rules_come_back_in_index_order(
        path: str, expected: list[tuple[int, dict[str, str]]]) -> None:
    assert OVERLAP.match(segs(path)) == expected


def test_index_order_not_insertion_order() -> None:
    trie = PathTrie()
    trie.add(5, Template.parse("/a/{x}"))
    trie.add(1, Template.parse("/**"))
    trie.add(3, Template.parse("/a/b"))
    assert trie.match(["a", "b"]) == [(1, {}), (3, {}), (5, {"x": "b"})]


def test_same_position_different_names_bind_separately() -> None:
    trie = trie_of("/x/{a}", "/x/{b}")
    assert trie.match(["x", "1"]) == [(0, {"a": "1"}), (1, {"b": "1"})]


def test_match_does_not_keep_state_between_calls() -> None:
    trie = trie_of("/c/{id}", "/c/{id}/n")
    assert trie.match(["c", "1", "n"]) == [(1, {"id": "1"})]
    assert trie.match(["c", "2"]) == [(0, {"id": "2"})]


@pytest.mark.parametrize(("text", "params", "path"), [
    ("/", {}, "/"),
    ("/customers", {}, "/customers"),
    ("/customers/", {}, "/customers"),
    ("/customers/{id}", {"id": "42"}, "/customers/42"),
    ("/v1/{a}/x/{b}", {"a": "1", "b": "2", "extra": "ignored"}, "/v1/1/x/2"),
])
def test_expand(text: str, params: dict[str, str], path: str) -> None:
    assert Template.parse(text).expand(params) == path


@pytest.mark.parametrize("text", ["/customers/*", "/customers/**", "/*/{id}"])
def test_expand_refuses_wildcards(text: str) -> None:
    with pytest.raises(TemplateError, match="cannot be expanded"):
        Template.parse(text).expand({"id": "1"})


def test_expand_needs_every_name() -> None:
    with pytest.raises(KeyError):
        Template.parse("/customers/{id}").expand({})
