"""Twenty mixed writes on json-server through ``gateway serve``, rolled back to the seed.

Ordering rule (stated, and why): json-server keeps a collection in insertion
order and its API has no positional insert: a POST appends, PUT and PATCH
change an item in place, DELETE removes it. So rollback gives back every
item exactly (same id, same fields) and keeps the exact order of every
collection whose items were only edited or added (edits are undone in place,
additions deleted), while an item re-created after a DELETE comes back at the
end of its collection. The seed is written in id order, and the rule the test
holds rollback to is: each collection, read in id order, equals the seed's,
and a collection the agent deleted nothing from is equal as written, order
included. (Moving re-created items back into place would mean deleting and
re-creating items the agent never touched; the gateway does not write to
resources outside the run.)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.harness import policy_text
from tests.thirdparty.conftest import AGENT, Gateway, JsonServer
from tests.thirdparty.test_json_server import RULES

SEED: dict[str, Any] = {
    "posts": [{"id": i, "title": f"Post {i}", "views": i * 10, "tags": [f"t{i}"]}
              for i in range(1, 7)],
    # on posts the agent never deletes: json-server deletes a post's comments with it
    # (a cascade no journal entry records, so no rollback could restore them)
    "comments": [{"id": i, "postId": (2, 4, 6)[i % 3], "body": f"comment {i}"}
                 for i in range(1, 6)],
    "profile": {"name": "typicode", "links": {"site": "https://example.org"}},
}

# twenty writes: edits, replacements, creations (some then edited or deleted), deletions
CALLS: list[tuple[str, str, Any]] = [
    ("PATCH", "/posts/1", {"title": "Post 1, edited"}),
    ("PATCH", "/posts/1", {"views": 11}),                      # the same item twice
    ("PUT", "/posts/2", {"title": "Replaced", "views": 0}),
    ("DELETE", "/posts/3", None),                               # from the middle
    ("POST", "/posts", {"title": "Agent post A"}),              # id 7
    ("PATCH", "/posts/7", {"views": 1}),                        # edits what it created
    ("POST", "/posts", {"title": "Agent post B"}),              # id 8
    ("DELETE", "/posts/8", None),                               # deletes what it created
    ("PATCH", "/posts/5", {"tags": []}),
    ("DELETE", "/posts/5", None),                               # edited, then deleted
    ("PATCH", "/comments/1", {"body": "comment 1 (edited)"}),
    ("PUT", "/comments/2", {"postId": 6, "body": "moved"}),
    ("POST", "/comments", {"postId": 7, "body": "on the agent's post"}),
    ("PATCH", "/comments/4", {"body": "comment 4 (edited)"}),
    ("PUT", "/comments/4", {"postId": 2, "body": "replaced"}),
    ("PATCH", "/profile", {"name": "agent"}),
    ("PUT", "/profile", {"name": "agent", "links": {}}),
    ("PATCH", "/posts/6", {"title": "Post 6, edited"}),
    ("DELETE", "/posts/1", None),                               # the first one
    ("POST", "/comments", {"postId": 1, "body": "another"}),
]


def in_id_order(db: dict[str, Any]) -> dict[str, Any]:
    return {name: sorted(value, key=lambda item: item["id"]) if isinstance(value, list) else value
            for name, value in db.items()}


def test_twenty_mixed_writes_roll_back_to_the_seed(
        json_server_factory: Callable[[dict[str, Any]], JsonServer],
        gateway_factory: Callable[..., Gateway]) -> None:
    assert len(CALLS) == 20
    server = json_server_factory(copy.deepcopy(SEED))
    gateway = gateway_factory({"jsonserver.yaml": policy_text(server.url, RULES,
                                                              upstream="jsonserver")})
    headers = {**AGENT, "X-Agent-Run": "twenty"}
    with httpx.Client(base_url=f"{gateway.proxy}/jsonserver", headers=headers,
                      timeout=30) as agent:
        for method, path, body in CALLS:
            response = agent.request(method, path, json=body)
            assert 200 <= response.status_code < 300, (method, path, response.text)
    assert server.on_disk() != SEED

    journal = gateway.journal(run="twenty", limit=100)
    assert len(journal) == 20 and all(e["reversible"] for e in journal), journal
    plan = gateway.rollback(run="twenty", dry_run=False)
    assert plan["status"] == "done", json.dumps(plan["conflicts"])
    assert [s["status"] for s in plan["steps"]] == ["applied"] * 20

    restored = server.on_disk()
    assert restored == server.state()
    assert in_id_order(restored) == SEED  # every item back, exactly
    assert restored["comments"] == SEED["comments"]  # nothing deleted: order as written
    assert restored["profile"] == SEED["profile"]
    # posts 1, 3 and 5 were deleted and re-created: appended, newest deletion first
    assert [p["id"] for p in restored["posts"]] == [2, 4, 6, 1, 5, 3]
