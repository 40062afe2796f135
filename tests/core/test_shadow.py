"""The projection a shadowed write answers with."""

from __future__ import annotations

import json

import pytest

from gateway.core.shadow import merge_patch, project, project_tool

PRIOR = {"id": "cus_1", "name": "Ada", "plan": "pro", "meta": {"tier": 1, "vip": True}}


@pytest.mark.parametrize(("target", "patch", "merged"), [  # RFC 7396's own examples
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch(target: object, patch: object, merged: object) -> None:
    assert merge_patch(target, patch) == merged


def body(projection: object) -> object:
    raw = projection.body
    return json.loads(raw) if raw else None


def test_patch_merges_into_the_prior() -> None:
    p = project("PATCH", PRIOR, 200, {"plan": "free", "meta": {"vip": None}}, False,
                "/crm/customers/cus_1", "e1", False)
    assert (p.status, body(p)) == (200, {**PRIOR, "plan": "free", "meta": {"tier": 1}})
    assert dict(p.headers)["content-type"] == "application/json"


def test_a_form_patch_sets_its_fields() -> None:
    p = project("PATCH", PRIOR, 200, {"plan": "free"}, True, "/c", "e1", False)
    assert body(p) == {**PRIOR, "plan": "free"}


def test_patch_of_a_missing_resource_is_the_body_and_a_non_object_patch_keeps_the_prior() -> None:
    assert body(project("PATCH", None, 404, {"plan": "free"}, False, "/c", "e", False)) == {
        "plan": "free"}
    kept = project("PATCH", PRIOR, 200, [{"op": "remove", "path": "/plan"}], False, "/c", "e",
                   False)
    assert (kept.status, body(kept)) == (200, PRIOR)


def test_put_replaces_and_creates() -> None:
    replaced = project("PUT", PRIOR, 200, {"name": "Ada L."}, False, "/c", "e", False)
    assert (replaced.status, body(replaced)) == (200, {"name": "Ada L."})
    created = project("PUT", None, 404, {"name": "New"}, False, "/c", "e", False)
    assert (created.status, body(created)) == (201, {"name": "New"})
    raw = project("PUT", None, 404, None, False, "/c", "e", False)
    assert (raw.status, raw.body) == (201, b"")


def test_post_creates_with_a_generated_id_unless_the_body_has_one() -> None:
    p = project("POST", None, None, {"name": "Co"}, False, "/crm/customers", "abc", False)
    assert (p.status, body(p)) == (201, {"name": "Co", "id": "shadow-abc"})
    assert dict(p.headers)["location"] == "/crm/customers/shadow-abc"
    own = project("POST", None, None, {"id": "cus_9", "name": "Co"}, False, "/c/", "abc", False)
    assert body(own)["id"] == "cus_9" and dict(own.headers)["location"] == "/c/cus_9"


def test_a_post_that_updates_merges_into_its_capture() -> None:
    p = project("POST", PRIOR, 200, {"plan": "free"}, True, "/c", "e", captured_path=True)
    assert (p.status, body(p)) == (200, {**PRIOR, "plan": "free"})


def test_delete_answers_the_prior_or_nothing() -> None:
    p = project("DELETE", PRIOR, 200, None, False, "/c", "e", False)
    assert (p.status, body(p)) == (200, PRIOR)
    gone = project("DELETE", None, 404, None, False, "/c", "e", False)
    assert (gone.status, gone.body, gone.headers) == (204, b"", ())


def test_a_tool_call_answers_a_tool_result() -> None:
    p = project_tool(7, PRIOR, 200, {"id": "cus_1", "plan": "free"}, "e")
    answer = body(p)
    assert answer["id"] == 7 and answer["result"]["isError"] is False
    assert answer["result"]["structuredContent"] == {**PRIOR, "plan": "free"}
    assert json.loads(answer["result"]["content"][0]["text"]) == {**PRIOR, "plan": "free"}
    made = body(project_tool("x", None, None, {"title": "Deal"}, "e9"))
    assert made["result"]["structuredContent"] == {"title": "Deal", "id": "shadow-e9"}
    assert project_tool(None, None, None, {}, "e").status == 202  # a notification
