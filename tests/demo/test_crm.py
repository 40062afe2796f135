"""The demo CRM, in process through httpx's ASGI transport."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.demo import create_app
from gateway.demo.crm import etag


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crm")


@pytest.fixture
async def crm():
    async with client_for(create_app()) as client:
        yield client


async def test_seed_lists_customers_and_deals(crm):
    customers = (await crm.get("/customers")).json()["items"]
    assert [c["id"] for c in customers] == ["cus_1", "cus_2", "cus_3"]
    assert customers[0]["name"] == "Ada Lovelace"
    assert {"name", "email", "plan", "balance", "updated_at"} <= customers[0].keys()
    deals = (await crm.get("/deals")).json()["items"]
    assert [d["id"] for d in deals] == ["deal_1", "deal_2"]


async def test_empty_app_has_no_items():
    async with client_for(create_app(seed=False)) as client:
        assert (await client.get("/customers")).json() == {"items": []}
        created = await client.post("/customers", json={"name": "First"})
        assert created.json()["id"] == "cus_1"


async def test_collection_filter_by_field(crm):
    items = (await crm.get("/customers", params={"plan": "pro"})).json()["items"]
    assert [c["id"] for c in items] == ["cus_1"]


async def test_create_assigns_id_location_and_updated_at(crm):
    response = await crm.post("/customers", json={"name": "Edsger Dijkstra", "plan": "pro"})
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == "cus_4"
    assert response.headers["location"] == "/customers/cus_4"
    assert body["updated_at"].endswith("Z")
    assert response.headers["etag"] == etag(body)
    deal = await crm.post("/deals", json={"customer_id": "cus_4", "amount": 10})
    assert deal.json()["id"] == "deal_3"
    assert deal.headers["location"] == "/deals/deal_3"
    assert (await crm.get("/customers/cus_4")).json()["name"] == "Edsger Dijkstra"


async def test_server_fields_are_not_taken_from_the_body(crm):
    body = (await crm.post("/customers", json={"name": "X", "updated_at": "1970"})).json()
    assert body["updated_at"] != "1970"


async def test_get_item_carries_etag_of_the_object(crm):
    response = await crm.get("/customers/cus_1")
    assert response.status_code == 200
    assert response.headers["etag"] == etag(response.json())
    assert response.headers["content-type"] == "application/json"


async def test_head_has_headers_but_no_body(crm):
    response = await crm.head("/customers/cus_1")
    assert response.status_code == 200
    assert response.content == b""
    assert "etag" in response.headers


async def test_patch_merges_and_changes_etag_and_updated_at(crm):
    before = await crm.get("/customers/cus_1")
    response = await crm.patch("/customers/cus_1", json={"plan": "enterprise"})
    assert response.status_code == 200
    after = response.json()
    assert after["plan"] == "enterprise"
    assert after["name"] == "Ada Lovelace"  # untouched fields stay
    assert after["updated_at"] > before.json()["updated_at"]
    assert response.headers["etag"] != before.headers["etag"]
    assert response.headers["etag"] == etag(after)
    assert (await crm.get("/customers/cus_1")).json() == after


async def test_put_replaces_all_fields_but_id(crm):
    response = await crm.put("/customers/cus_2", json={"name": "G. Hopper"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "name", "updated_at"}
    assert body["id"] == "cus_2"
    assert response.headers["etag"] == etag(body)


async def test_put_with_another_id_in_body_is_rejected(crm):
    response = await crm.put("/customers/cus_2", json={"id": "cus_9", "name": "x"})
    assert response.status_code == 400
    same = await crm.put("/customers/cus_2", json={"id": "cus_2", "name": "x"})
    assert same.status_code == 200


async def test_if_match_guards_writes(crm):
    current = await crm.get("/customers/cus_1")
    stale = await crm.patch("/customers/cus_1", json={"plan": "free"},
                            headers={"If-Match": '"stale"'})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "precondition_failed"
    ok = await crm.patch("/customers/cus_1", json={"plan": "free"},
                         headers={"If-Match": current.headers["etag"]})
    assert ok.status_code == 200


async def test_delete_then_404(crm):
    response = await crm.delete("/customers/cus_3")
    assert response.status_code == 204
    assert response.content == b""
    missing = await crm.get("/customers/cus_3")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_unknown_id_is_404_json(crm, method):
    kwargs = {"json": {"name": "x"}} if method in ("PUT", "PATCH") else {}
    response = await crm.request(method, "/customers/cus_99", **kwargs)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_recreate_with_id_restores_a_deleted_resource(crm):
    prior = (await crm.get("/customers/cus_3")).json()
    await crm.delete("/customers/cus_3")
    response = await crm.post("/customers", json=prior)  # what a rollback sends
    assert response.status_code == 201
    assert response.headers["location"] == "/customers/cus_3"
    restored = response.json()
    assert {k: v for k, v in restored.items() if k != "updated_at"} == \
        {k: v for k, v in prior.items() if k != "updated_at"}
    assert (await crm.get("/customers/cus_3")).status_code == 200


async def test_recreate_with_taken_id_is_409(crm):
    response = await crm.post("/customers", json={"id": "cus_1", "name": "dup"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_recreated_id_ahead_of_counter_is_skipped(crm):
    await crm.post("/customers", json={"id": "cus_5", "name": "ahead"})
    first = (await crm.post("/customers", json={"name": "a"})).json()["id"]
    second = (await crm.post("/customers", json={"name": "b"})).json()["id"]
    assert (first, second) == ("cus_6", "cus_7")


async def test_bad_recreate_id_is_400(crm):
    response = await crm.post("/customers", json={"id": "../etc", "name": "x"})
    assert response.status_code == 400


async def test_form_bodies_for_post_patch_put(crm):
    form = {"content-type": "application/x-www-form-urlencoded"}
    created = await crm.post("/customers", content=b"name=Barbara+Liskov&plan=pro", headers=form)
    assert created.status_code == 201
    assert created.json()["name"] == "Barbara Liskov"
    cid = created.json()["id"]
    patched = await crm.patch(f"/customers/{cid}", content=b"email=bl%40example.com",
                              headers=form)
    assert patched.json()["email"] == "bl@example.com"
    assert patched.json()["plan"] == "pro"
    replaced = await crm.put(f"/customers/{cid}", content=b"name=B.+Liskov", headers=form)
    assert set(replaced.json()) == {"id", "name", "updated_at"}


async def test_recreate_with_id_from_form_body(crm):
    await crm.delete("/customers/cus_2")
    response = await crm.post("/customers", content=b"id=cus_2&name=Grace",
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 201
    assert response.json()["id"] == "cus_2"


@pytest.mark.parametrize(("content", "ctype", "status"), [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b"<x/>", "application/xml", 415),
    (b"a=1&&&=", "application/x-www-form-urlencoded", 400),
])
async def test_bad_bodies(crm, content, ctype, status):
    response = await crm.post("/customers", content=content, headers={"content-type": ctype})
    assert response.status_code == status
    assert "error" in response.json()


async def test_unknown_routes_and_methods(crm):
    assert (await crm.get("/invoices")).status_code == 404
    assert (await crm.get("/customers/cus_1/notes")).status_code == 404
    not_allowed = await crm.delete("/customers")
    assert not_allowed.status_code == 405
    assert "POST" in not_allowed.headers["allow"]
    assert (await crm.post("/customers/cus_1", json={})).status_code == 405


async def test_token_required_when_configured():
    async with client_for(create_app(token="s3cret")) as client:
        missing = await client.get("/customers")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "unauthorized"
        assert "bearer" in missing.headers["www-authenticate"].lower()
        wrong = await client.get("/customers", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.get("/customers", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # the test endpoints stay open so a test can always inspect the upstream
        log = (await client.get("/_demo/requests")).json()["items"]
        assert [entry["headers"].get("authorization") for entry in log] == \
            [None, "Bearer nope", "Bearer s3cret"]


async def test_request_log_records_what_arrived(crm):
    await crm.get("/customers", params={"plan": "pro"}, headers={"X-Probe": "1"})
    await crm.patch("/customers/cus_1", json={"plan": "free"})
    log = (await crm.get("/_demo/requests")).json()["items"]
    assert [(e["method"], e["path"]) for e in log] == \
        [("GET", "/customers"), ("PATCH", "/customers/cus_1")]
    assert log[0]["query"] == "plan=pro"
    assert log[0]["headers"]["x-probe"] == "1"  # header names lower-cased
    assert json.loads(log[1]["body"]) == {"plan": "free"}


async def test_reset_restores_seed_and_clears_log(crm):
    await crm.delete("/customers/cus_1")
    await crm.post("/customers", json={"name": "new"})
    assert (await crm.post("/_demo/reset")).status_code == 200
    assert (await crm.get("/_demo/requests")).json() == {"items": []}
    ids = [c["id"] for c in (await crm.get("/customers")).json()["items"]]
    assert ids == ["cus_1", "cus_2", "cus_3"]
    assert (await crm.post("/customers", json={"name": "again"})).json()["id"] == "cus_4"


async def test_demo_health_and_unknown_demo_endpoint(crm):
    assert (await crm.get("/_demo/health")).json() == {"ok": True}
    assert (await crm.get("/_demo/nothing")).status_code == 404
    assert (await crm.get("/_demo/requests")).json() == {"items": []}  # not logged


async def test_lifespan_and_non_http_scopes_are_handled():
    app = create_app()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message["type"])

    await app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    await app({"type": "websocket"}, receive, send)  # ignored, no crash


async def test_oversized_body_is_413(crm):
    response = await crm.post("/customers", content=b"x" * ((1 << 20) + 1),
                              headers={"content-type": "application/json"})
    assert response.status_code == 413
