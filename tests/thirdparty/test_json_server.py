"""Rollback on json-server 0.17.4, a real REST server from npm, through ``gateway serve``.

An agent edits, replaces, creates and deletes through the gateway; an
operator rolls the run back; json-server's collections (over HTTP) and the
db.json it persists must hold exactly what they held before.

What json-server does that matters here (read in its source, checked below):
- ids are kept: a POST whose body has an ``id`` inserts it with that id, so the
  inferred undo of a DELETE (POST the prior object to the collection)
  recreates the same resource; no ``undo:`` override is needed;
- a recreated item is appended: a collection's order on disk can differ from
  before, so collections are compared by id;
- PUT replaces the whole object (keeping its id), PATCH merges, both answer the
  resource: the drift check compares it with a fresh read;
- ``X-HTTP-Method-Override`` is honoured on POST (express method-override), so
  the gateway must refuse it rather than judge a POST that is really a DELETE.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.harness import policy_text
from tests.thirdparty.conftest import AGENT, Gateway, JsonServer

INITIAL: dict[str, Any] = {
    "posts": [
        {"id": 1, "title": "Hello", "author": "ada", "tags": ["intro"], "views": 10},
        {"id": 2, "title": "Second", "author": "bob", "tags": [], "views": 3},
        {"id": 3, "title": "Draft", "author": "ada", "tags": ["wip"], "views": 0,
         "draft": True, "meta": {"words": 120, "lang": "en"}},
    ],
    "comments": [
        {"id": 1, "postId": 1, "body": "first!"},
        {"id": 2, "postId": 1, "body": "nice post"},
    ],
    "profile": {"name": "typicode", "links": {"site": "https://example.org"}},
}

RULES = """
- id: read-all
  match: {methods: [GET, HEAD], path: "/**"}
  action: allow
- id: edit-posts
  match: {methods: [PATCH, PUT, DELETE], path: "/posts/{id}"}
  action: allow
- id: create-posts
  match: {methods: [POST], path: "/posts"}
  action: allow
- id: edit-comments
  match: {methods: [PATCH, PUT, DELETE], path: "/comments/{id}"}
  action: allow
- id: create-comments
  match: {methods: [POST], path: "/comments"}
  action: allow
- id: edit-profile
  match: {methods: [PATCH, PUT], path: "/profile"}
  action: allow
"""


def by_id(db: dict[str, Any]) -> dict[str, Any]:
    """Collections as {id: item} (json-server appends a recreated item at the end)."""
    return {name: {item["id"]: item for item in value} if isinstance(value, list) else value
            for name, value in db.items()}


@pytest.fixture
def setup(json_server_factory: Callable[[dict[str, Any]], JsonServer],
          gateway_factory: Callable[..., Gateway]) -> tuple[JsonServer, Gateway]:
    server = json_server_factory(copy.deepcopy(INITIAL))
    gateway = gateway_factory({"jsonserver.yaml": policy_text(server.url, RULES,
                                                              upstream="jsonserver")})
    return server, gateway


def test_a_run_of_writes_rolls_back_to_the_initial_state(
        setup: tuple[JsonServer, Gateway]) -> None:
    server, gateway = setup
    assert server.on_disk() == INITIAL and server.state() == INITIAL
    run = {**AGENT, "X-Agent-Run": "js-run-1", "X-Agent-Model": "scripted"}
    base = f"{gateway.proxy}/jsonserver"
    with httpx.Client(base_url=base, headers=run, timeout=30) as agent:
        assert agent.get("/posts").json() == INITIAL["posts"]  # reads pass through
        calls = [
            ("PATCH", "/posts/1", {"title": "Hello, edited", "views": 11}),
            ("PUT", "/posts/3", {"title": "Published", "author": "ada", "views": 1}),
            ("POST", "/posts", {"title": "Agent post", "author": "bot"}),
            ("POST", "/comments", {"postId": 4, "body": "agent comment"}),
            ("PATCH", "/comments/1", {"body": "first! (edited)"}),
            ("DELETE", "/comments/2", None),
            ("DELETE", "/posts/2", None),
            ("PUT", "/profile", {"name": "agent"}),
        ]
        for method, path, body in calls:
            response = agent.request(method, path, json=body)
            assert 200 <= response.status_code < 300, (method, path, response.text)
            assert response.headers["x-gateway-decision"] == "allow"
        assert agent.get("/posts/4").json() == {"id": 4, "title": "Agent post", "author": "bot"}

    changed = server.on_disk()
    assert changed == server.state()
    assert by_id(changed)["posts"][3] == {"id": 3, "title": "Published", "author": "ada",
                                          "views": 1}  # PUT replaced it, id kept
    assert 2 not in by_id(changed)["posts"] and 2 not in by_id(changed)["comments"]
    assert changed["profile"] == {"name": "agent"}

    journal = gateway.journal(run="js-run-1")
    assert [(e["method"], e["path"]) for e in reversed(journal)] == \
        [(method, path) for method, path, _ in calls]
    assert all(e["reversible"] and 200 <= e["status"] < 300 for e in journal), journal
    deleted = next(e for e in journal if e["path"] == "/posts/2")
    assert deleted["prior"] == INITIAL["posts"][1]
    assert deleted["undo"]["method"] == "POST" and deleted["undo"]["path"] == "/posts"

    dry = gateway.rollback(run="js-run-1", dry_run=True)
    assert [s["status"] for s in dry["steps"]] == ["planned"] * len(calls), dry
    assert server.on_disk() == changed  # a dry run sends nothing

    plan = gateway.rollback(run="js-run-1", dry_run=False)
    assert plan["status"] == "done", plan
    assert plan["irreversible"] == [] and plan["conflicts"] == []
    assert [(s["method"], s["path"], s["status"]) for s in plan["steps"]] == [
        ("PUT", "/profile", "applied"),
        ("POST", "/posts", "applied"),      # recreates post 2, with its id
        ("POST", "/comments", "applied"),   # recreates comment 2
        ("PUT", "/comments/1", "applied"),
        ("DELETE", "/comments/3", "applied"),
        ("DELETE", "/posts/4", "applied"),
        ("PUT", "/posts/3", "applied"),
        ("PUT", "/posts/1", "applied"),
    ]

    assert by_id(server.state()) == by_id(INITIAL)
    assert by_id(server.on_disk()) == by_id(INITIAL)
    for name in ("posts", "comments"):  # each resource as GET /name/id serves it
        for item in INITIAL[name]:
            assert httpx.get(f"{server.url}/{name}/{item['id']}").json() == item
    assert httpx.get(f"{server.url}/posts/4").status_code == 404
    assert httpx.get(f"{server.url}/profile").json() == INITIAL["profile"]

    # The compensations are journaled too, and a second rollback has nothing left to do.
    assert len(gateway.journal(run=f"rollback:{plan['id']}")) == len(calls)
    again = gateway.rollback(run="js-run-1", dry_run=True)
    assert [(s["status"], s["detail"]) for s in again["steps"]] == \
        [("skipped", f"already rolled back by plan {plan['id']}")] * len(calls), again
    assert again["conflicts"] == []


def test_a_rollback_leaves_a_resource_someone_else_changed_since(
        setup: tuple[JsonServer, Gateway]) -> None:
    server, gateway = setup
    run = {**AGENT, "X-Agent-Run": "js-run-2"}
    edited = httpx.patch(f"{gateway.proxy}/jsonserver/posts/1", json={"title": "agent"},
                         headers=run)
    assert edited.status_code == 200
    created = httpx.post(f"{gateway.proxy}/jsonserver/comments",
                         json={"postId": 1, "body": "agent"}, headers=run)
    assert created.status_code == 201
    # A person edits the post directly on json-server after the agent did.
    assert httpx.patch(f"{server.url}/posts/1", json={"views": 99}).status_code == 200

    plan = gateway.rollback(run="js-run-2", dry_run=False)
    assert plan["status"] == "incomplete"
    assert [(s["method"], s["path"], s["status"]) for s in plan["steps"]] == [
        ("DELETE", f"/comments/{created.json()['id']}", "applied"),
        ("PUT", "/posts/1", "conflict"),
    ]
    assert "views" in plan["conflicts"][0]["detail"]
    post = httpx.get(f"{server.url}/posts/1").json()
    assert post["title"] == "agent" and post["views"] == 99  # left for an operator
    assert by_id(server.on_disk())["comments"] == by_id(INITIAL)["comments"]

    forced = gateway.rollback(run="js-run-2", dry_run=False, force=True)
    assert [s["status"] for s in forced["steps"]][-1] == "applied"
    assert httpx.get(f"{server.url}/posts/1").json() == INITIAL["posts"][0]


def test_a_method_override_json_server_would_honour_never_reaches_it(
        setup: tuple[JsonServer, Gateway]) -> None:
    server, gateway = setup
    # json-server itself turns this POST into a DELETE ...
    direct = httpx.post(f"{server.url}/posts/3", headers={"X-HTTP-Method-Override": "DELETE"})
    assert direct.status_code == 200
    assert httpx.get(f"{server.url}/posts/3").status_code == 404
    before = server.on_disk()
    # ... so the gateway refuses it: the policy judged a POST, not the DELETE it would be.
    refused = httpx.post(f"{gateway.proxy}/jsonserver/posts/1",
                         headers={**AGENT, "X-HTTP-Method-Override": "DELETE",
                                  "X-Agent-Run": "js-run-3"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "bad_request"
    assert server.on_disk() == before
    assert httpx.get(f"{server.url}/posts/1").json() == INITIAL["posts"][0]
    assert gateway.journal(run="js-run-3") == []
