"""``POST /v1/killswitch/engage`` taken by ``FastEngage`` when plainly valid, and left to
the FastAPI route, body and all, when anything about it is not (the route then gives
the one error shape)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admin.auth import Operator, OperatorDirectory
from gateway.admin.fast_engage import FastEngage
from gateway.core.model import FreezeScope
from gateway.errors import AdminError
from tests.harness import CRM_RULES, SQLITE, TOKENS, policy_text, sha, started_gateway

DIRECTORY = OperatorDirectory([(role, role, sha(token)) for role, token in TOKENS.items()])
JSON = {"content-type": "application/json"}


def auth(role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[role]}"}


def check(upstream: str | None, agent: str | None) -> tuple[FreezeScope, str | None]:
    if upstream is not None and agent is not None:
        raise ValueError("both")
    if upstream is not None and upstream != "crm":
        raise AdminError(400, "unknown_target", "no such upstream")
    return (FreezeScope.UPSTREAM, upstream) if upstream else (FreezeScope.GLOBAL, None)


class Recorded:
    """The app behind the middleware (the routes), and the engages it was given."""

    def __init__(self) -> None:
        self.routed: list[bytes] = []
        self.engaged: list[tuple[Any, ...]] = []
        self.app = FastEngage(self.route, check, self.engage, lambda: DIRECTORY,
                              lambda: {AdminError: self.refused})

    async def route(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.routed.append(body)
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b"routed"})

    async def engage(self, kind: FreezeScope, target: str | None, reason: str,
                     operator: Operator) -> dict[str, Any]:
        self.engaged.append((kind, target, reason, operator.name))
        if reason == "refuse":
            raise AdminError(409, "conflict", "refused")
        return {"engaged": True, "reason": reason}

    async def refused(self, request: Any, exc: AdminError) -> Any:
        from fastapi.responses import JSONResponse
        return JSONResponse({"error": {"code": exc.code}}, exc.status)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(self.app), base_url="http://a")


async def test_a_plainly_valid_engage_is_answered_without_the_route() -> None:
    recorded = Recorded()
    async with recorded.client() as client:
        for role in ("approver", "admin"):
            body = {"reason": "stop ✋ \u2028", "upstream": "crm", "agent": None}
            answer = await client.post("/v1/killswitch/engage", json=body,
                                       headers={**JSON, **auth(role)})
            assert (answer.status_code, answer.json()) == (200, {"engaged": True,
                                                                 "reason": "stop ✋ \u2028"})
            assert answer.headers["content-type"] == "application/json"
        refused = await client.post("/v1/killswitch/engage", json={"reason": "refuse"},
                                    headers={**JSON, **auth("approver")})
        assert (refused.status_code, refused.json()) == (409, {"error": {"code": "conflict"}})
    assert recorded.routed == []
    assert recorded.engaged == [(FreezeScope.UPSTREAM, "crm", "stop ✋ \u2028", "approver"),
                                (FreezeScope.UPSTREAM, "crm", "stop ✋ \u2028", "admin"),
                                (FreezeScope.GLOBAL, None, "refuse", "approver")]


@pytest.mark.parametrize("headers, body", [
    ({**JSON}, b'{"reason": "no token"}'),
    ({**JSON, "authorization": "Bearer nope"}, b'{"reason": "bad token"}'),
    ({**JSON, **auth("viewer")}, b'{"reason": "too low a role"}'),
    ({**JSON, **auth("approver")}, b'{"reason": "x", "scope": "global"}'),  # extra field
    ({**JSON, **auth("approver")}, b'{"reason": ""}'),
    ({**JSON, **auth("approver")}, json.dumps({"reason": "x" * 2001}).encode()),
    ({**JSON, **auth("approver")}, b'{"reason": 5}'),
    ({**JSON, **auth("approver")}, b'{"upstream": "crm"}'),
    ({**JSON, **auth("approver")}, b'{"reason": "x", "upstream": 1}'),
    ({**JSON, **auth("approver")}, b'{"reason": "x", "upstream": "crmm"}'),
    ({**JSON, **auth("approver")}, b'{"reason": "x", "upstream": "crm", "agent": "bot"}'),
    ({**JSON, **auth("approver")}, b'["reason"]'),
    ({**JSON, **auth("approver")}, b'{"reason": "x"'),
    ({**JSON, **auth("approver")}, b'{"reason": "\\ud800"}'),  # json.loads's call, not orjson's
    ({"content-type": "text/plain", **auth("approver")}, b'{"reason": "x"}'),
    ({"content-type": "application/json; charset=utf-8", **auth("approver")},
     b'{"reason": "x"}'),
])
async def test_anything_else_goes_to_the_route_with_its_body(headers: dict[str, str],
                                                            body: bytes) -> None:
    recorded = Recorded()
    async with recorded.client() as client:
        answer = await client.post("/v1/killswitch/engage", content=body, headers=headers)
    assert (answer.status_code, recorded.routed, recorded.engaged) == (599, [body], [])


async def test_other_calls_are_the_routes() -> None:
    recorded = Recorded()
    async with recorded.client() as client:
        for method, path in (("POST", "/v1/killswitch/release"), ("GET", "/v1/killswitch/engage"),
                             ("POST", "/v1/killswitch/engage/")):
            answer = await client.request(method, path, content=b'{"reason": "x"}',
                                          headers={**JSON, **auth("admin")})
            assert answer.status_code == 599
    assert len(recorded.routed) == 3 and recorded.engaged == []


async def test_the_admin_app_answers_as_its_route_does(tmp_path: Path) -> None:
    """The same engage through the middleware and through the route (a content type it
    leaves to the route): the same answer but for the freeze's time; the route's
    refusals stay the route's."""
    async with started_gateway(tmp_path, SQLITE + str(tmp_path / "g.db"),
                               {"crm.yaml": policy_text("http://127.0.0.1:9", CRM_RULES)}) as gw:
        answers = []
        for content_type in ("application/json", "application/json; charset=utf-8"):
            answer = await gw.admin.post(
                "/v1/killswitch/engage", content=json.dumps({"reason": "stop", "upstream": "crm"}),
                headers={"content-type": content_type, **gw.as_role("approver")})
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
            assert (await gw.release(upstream="crm")).status_code == 200
        fast, routed = answers
        assert fast["freeze"].pop("at") and routed["freeze"].pop("at")
        for answer in answers:
            answer["freezes"][0].pop("at")
        assert fast == routed == {
            "engaged": True, "freezes": [{"scope": "upstream", "target": "crm",
                                          "reason": "stop", "by": "approver"}],
            "freeze": {"scope": "upstream", "target": "crm", "reason": "stop",
                       "by": "approver"}, "in_flight": []}
        unknown = await gw.engage(upstream="crmm")
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "unknown_target")
        low = await gw.admin.post("/v1/killswitch/engage", json={"reason": "x"},
                                  headers=gw.as_role("viewer"))
        assert (low.status_code, low.json()["error"]["code"]) == (403, "forbidden")
        assert (await gw.admin.get("/v1/killswitch", headers=gw.as_role("viewer"))).json() \
            == {"engaged": False, "freezes": []}


