"""Policies ``policy init`` generates, through the listener against a recording upstream.

AWS's JSON and query APIs put every operation on ``/`` and tell them apart by a
header (``X-Amz-Target: DynamoDB_20120810.DeleteTable``) or a query parameter
(``?Action=TerminateInstances``), as their descriptions in the APIs.guru
directory write them (``/#X-Amz-Target=...``, ``/#Action=...``; the shapes
below are those of ``dynamodb.json`` and ``ec2.json``). A generated policy
must judge such a call by the operation it names: a write is journaled and
frozen like any other, and one that destroys waits for a person.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.operator.policy_init import policy_from_description
from tests.harness import AGENT_KEY, Harness, serve_app, started_gateway
from tests.trust.recording import Recording

TARGET = "DynamoDB_20120810."
AMZ_JSON = {"content-type": "application/x-amz-json-1.0"}


def _targeted(name: str) -> dict[str, Any]:
    return {"post": {"operationId": name, "parameters": [
        {"name": "X-Amz-Target", "in": "header", "required": True,
         "schema": {"type": "string", "enum": [TARGET + name]}}],
        "requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "properties": {"TableName": {"type": "string"}}}}}},
        "responses": {"200": {"description": "Success"}}}}


def _action(name: str) -> dict[str, Any]:
    return {method: {"operationId": f"{method.upper()}_{name}",
                     "responses": {"200": {"description": "Success"}}}
            for method in ("get", "post")}


SLACK = {"openapi": "3.0.0", "info": {"title": "Slack Web API"}, "paths": {
    # as slack.com.json describes them: some methods that change things are GETs
    "/apps.uninstall": {"get": {"operationId": "apps_uninstall"}},
    "/auth.revoke": {"get": {"operationId": "auth_revoke"}},
    "/conversations.history": {"get": {"operationId": "conversations_history"}},
    "/chat.postMessage": {"post": {"operationId": "chat_postMessage"}},
    "/chat.delete": {"post": {"operationId": "chat_delete"}}}}
CUSTOM = {"openapi": "3.0.0", "info": {"title": "Custom methods (AIP-136)"}, "paths": {
    # as googleapis.com/retail.json writes them: one segment mixes an id and a method
    "/v1/{placement}:predict": {"post": {"operationId": "placements.predict"}},
    "/v1/{name}:pause": {"post": {"operationId": "models.pause"}},
    "/v1/{name}:purge": {"post": {"operationId": "products.purge"}},
    "/v1/{catalog}:getDefaultBranch": {"get": {"operationId": "catalogs.getDefaultBranch"}}}}
DYNAMODB = {"openapi": "3.0.0", "info": {"title": "Amazon DynamoDB"},
            "paths": {f"/#X-Amz-Target={TARGET}{name}": _targeted(name)
                      for name in ("DescribeTable", "DeleteTable", "PutItem")}}
EC2 = {"openapi": "3.0.0", "info": {"title": "Amazon Elastic Compute Cloud"},
       "paths": {f"/#Action={name}": _action(name)
                 for name in ("DescribeInstances", "TerminateInstances", "StartInstances")}}


@pytest.fixture
async def aws(tmp_path: Path) -> AsyncIterator[tuple[Harness, Recording]]:
    upstream = Recording()
    async with serve_app(upstream) as url:
        policies = {f"{name}.yaml": policy_from_description(doc, name, url, f"{name}.json")[0]
                    for name, doc in (("ddb", DYNAMODB), ("ec2", EC2), ("slack", SLACK),
                                                   ("aip", CUSTOM))}
        async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                                   policies) as harness:
            yield harness, upstream


async def test_an_aws_json_call_is_judged_by_the_target_it_names(
        aws: tuple[Harness, Recording]) -> None:
    gw, upstream = aws
    assert (await gw.engage()).status_code == 200

    def call(name: str, **headers: str) -> Any:
        return gw.agent.post("/ddb/", json={"TableName": "orders"},
                             headers={**AMZ_JSON, "X-Amz-Target": TARGET + name, **headers})

    frozen = await call("PutItem")
    assert frozen.status_code == 423, frozen.text  # a write: the kill switch stops it
    held = await call("DeleteTable", Prefer="wait=0")  # it destroys: a person decides
    assert held.status_code == 409 and held.json()["error"]["code"] == "approval_pending"
    assert upstream.reached() == []
    read = await call("DescribeTable")  # reads go on under a freeze
    assert read.status_code == 200 and read.headers["x-gateway-decision"] == "allow"
    assert [a.headers["x-amz-target"] for a in upstream.reached()] == [TARGET + "DescribeTable"]
    assert await gw.journal() == []  # a read is not journaled

    assert (await gw.release()).status_code == 200
    put = await call("PutItem")
    assert put.status_code == 200 and put.headers["x-gateway-decision"] == "allow"
    assert [a.headers["x-amz-target"] for a in upstream.reached()][1:] == [TARGET + "PutItem"]
    assert [(e["method"], e["path"]) for e in await gw.journal()] == [("POST", "/")]


async def test_an_aws_query_call_is_judged_by_its_action(
        aws: tuple[Harness, Recording]) -> None:
    gw, upstream = aws
    assert (await gw.engage()).status_code == 200
    terminate = {"Action": "TerminateInstances", "InstanceId.1": "i-1"}
    start = {"Action": "StartInstances", "InstanceId.1": "i-1"}
    frozen = await gw.agent.get("/ec2/", params=start)  # the query API takes a GET too
    assert frozen.status_code == 423, frozen.text
    posted = await gw.agent.post("/ec2/", params=start)
    assert posted.status_code == 423, posted.text
    for method in ("GET", "POST"):  # it destroys: a person decides
        held = await gw.agent.request(method, "/ec2/", params=terminate,
                                      headers={"Prefer": "wait=0"})
        assert held.status_code == 409 and held.json()["error"]["code"] == "approval_pending"
    assert upstream.reached() == []
    read = await gw.agent.get("/ec2/", params={"Action": "DescribeInstances"})
    assert read.status_code == 200 and read.headers["x-gateway-decision"] == "allow"
    assert [a.target for a in upstream.reached()] == ["/?Action=DescribeInstances"]

    assert (await gw.release()).status_code == 200
    started = await gw.agent.get("/ec2/", params=start)
    assert started.status_code == 200 and started.headers["x-gateway-decision"] == "allow"
    assert [a.target for a in upstream.reached()][1:] == [
        "/?Action=StartInstances&InstanceId.1=i-1"]
    assert [(e["method"], e["path"]) for e in await gw.journal()] == [("GET", "/")]


async def test_a_judged_header_sent_twice_is_refused(aws: tuple[Harness, Recording]) -> None:
    """The rule reads one ``X-Amz-Target``, the upstream may read the other: 400, unsent."""
    gw, upstream = aws
    for first, second, spelt in (("DeleteTable", "DescribeTable", "x-amz-target"),
                                 ("DescribeTable", "PutItem", "X-Amz-Target"),
                                 # WSGI and CGI servers read both as HTTP_X_AMZ_TARGET
                                 ("DescribeTable", "DeleteTable", "x_amz_target")):
        response = await gw.agent.post("/ddb/", content=b'{"TableName": "orders"}', headers=[
            ("content-type", "application/x-amz-json-1.0"), ("x-amz-target", TARGET + first),
            (spelt, TARGET + second), ("prefer", "wait=0")])
        assert response.status_code == 400, response.text
        assert "x-amz-target" in response.json()["error"]["message"]
    assert upstream.reached() == []
    assert await gw.journal() == []


def botocore_request(operation: str, **params: Any) -> tuple[dict[str, str], bytes]:
    """The headers and body botocore sends for an EC2 ``operation`` (a form-encoded
    ``POST /`` naming its ``Action`` in the body), caught before it leaves."""
    import botocore.session

    client = botocore.session.get_session().create_client(
        "ec2", region_name="us-east-1", endpoint_url="http://gateway/ec2/",
        aws_access_key_id=AGENT_KEY, aws_secret_access_key="unused")
    caught: list[Any] = []

    def catch(request: Any, **_: Any) -> None:
        caught.append(request)
        raise _Caught

    client.meta.events.register("before-send", catch)
    with pytest.raises(_Caught):
        getattr(client, operation)(**params)
    [request] = caught
    assert request.method == "POST" and request.url == "http://gateway/ec2/"
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
    return headers, request.body.encode() if isinstance(request.body, str) else request.body


class _Caught(Exception):
    pass


async def test_an_aws_query_call_from_botocore_is_judged_by_the_action_in_its_body(
        aws: tuple[Harness, Recording]) -> None:
    """boto3 sends the query protocol as ``POST /`` with ``Action=...`` in a form body:
    the generated rules judge it there as they do in the query."""
    gw, upstream = aws
    terminate = botocore_request("terminate_instances", InstanceIds=["i-1"])
    start = botocore_request("start_instances", InstanceIds=["i-1"])
    describe = botocore_request("describe_instances")
    assert terminate[1].startswith(b"Action=TerminateInstances&Version=")

    def send(request: tuple[dict[str, str], bytes], **extra: str) -> Any:
        return gw.agent.post("/ec2/", content=request[1], headers={**request[0], **extra})

    assert (await gw.engage()).status_code == 200
    frozen = await send(start)  # a write: the kill switch stops it
    assert frozen.status_code == 423, frozen.text
    held = await send(terminate, Prefer="wait=0")  # it destroys: a person decides
    assert held.status_code == 409 and held.json()["error"]["code"] == "approval_pending"
    assert upstream.reached() == []
    read = await send(describe)  # reads go on under a freeze
    assert read.status_code == 200 and read.headers["x-gateway-decision"] == "allow"
    assert [a.body for a in upstream.reached()] == [describe[1]]
    assert await gw.journal() == []

    assert (await gw.release()).status_code == 200
    started = await send(start)
    assert started.status_code == 200 and started.headers["x-gateway-decision"] == "allow"
    assert [a.body for a in upstream.reached()][1:] == [start[1]]
    [entry] = await gw.journal()  # journaled as the write it is, under StartInstances' rule
    assert (entry["method"], entry["path"]) == ("POST", "/") and "start" in entry["rule"]


@pytest.mark.parametrize("target", ["X-Amz-Target", "x_amz_target"])
async def test_a_call_cannot_name_its_operation_in_action_and_x_amz_target(
        aws: tuple[Harness, Recording], target: str) -> None:
    """SQS speaks the query protocol (``Action``) and AWS's JSON one (``X-Amz-Target``)
    on one endpoint: a call naming a read in ``Action`` (judged) and a delete in
    ``X-Amz-Target`` (what such a service may run) is 400, wherever ``Action`` is."""
    gw, upstream = aws
    header = {target: "AmazonSQS.DeleteQueue"}
    form = {"content-type": "application/x-www-form-urlencoded"}
    for request in ({"params": {"Action": "DescribeInstances"}},
                    {"content": b"Action=DescribeInstances", "headers": form},
                    {"json": {"Action": "DescribeInstances"}}):
        headers = {**request.pop("headers", {}), **header}  # type: ignore[dict-item]
        response = await gw.agent.post("/ec2/", headers=headers, **request)  # type: ignore[arg-type]
        assert response.status_code == 400, (request, response.text)
        assert "x-amz-target" in response.json()["error"]["message"].lower()
    assert upstream.reached() == []
    # a JSON-protocol call whose input has an ``Action`` member (EventBridge's
    # PutPermission), under rules that judge X-Amz-Target alone: fine
    member = await gw.agent.post("/ddb/", json={"TableName": "t", "Action": "events:Put"},
                                 headers={**AMZ_JSON, "X-Amz-Target": TARGET + "DescribeTable"})
    assert member.status_code == 200, member.text


@pytest.mark.parametrize("judged", ["DescribeInstances", "StartInstances"])
async def test_a_form_body_cannot_name_another_action_than_the_query(
        aws: tuple[Harness, Recording], judged: str) -> None:
    """The query protocol reads parameters from the query and the form body alike (the
    body's winning, as moto does): the rule judges ``?Action=`` in the query, so a body
    that names the parameter again is refused (400), and nothing reaches the upstream."""
    gw, upstream = aws
    form = {"content-type": "application/x-www-form-urlencoded"}
    for body in (b"Action=TerminateInstances&InstanceId.1=i-1",
                 b"action=TerminateInstances&InstanceId.1=i-1"):
        response = await gw.agent.post("/ec2/", params={"Action": judged}, content=body,
                                       headers=form)
        assert response.status_code == 400, response.text
        assert "action" in response.json()["error"]["message"].lower()
    assert upstream.reached() == []
    assert await gw.journal() == []
    fine = await gw.agent.post("/ec2/", params={"Action": judged}, content=b"InstanceId.1=i-1",
                               headers=form)
    assert fine.status_code == 200, fine.text
    assert [a.body for a in upstream.reached()] == [b"InstanceId.1=i-1"]


async def test_an_rpc_method_described_as_a_get_is_judged_by_its_name(
        aws: tuple[Harness, Recording]) -> None:
    """slack_sdk POSTs every method; ``apps.uninstall`` is described as a GET, yet it
    uninstalls: a write, frozen and journaled, by either method."""
    gw, upstream = aws
    assert (await gw.engage()).status_code == 200
    for method in ("POST", "GET"):
        for name in ("apps.uninstall", "auth.revoke"):
            frozen = await gw.agent.request(method, f"/slack/{name}", data={"client_id": "c"})
            assert frozen.status_code == 423, (method, name, frozen.text)
    assert upstream.reached() == []
    read = await gw.agent.post("/slack/conversations.history", data={"channel": "C1"})
    assert read.status_code == 200 and read.headers["x-gateway-decision"] == "allow"
    assert [a.target for a in upstream.reached()] == ["/conversations.history"]

    assert (await gw.release()).status_code == 200
    held = await gw.agent.post("/slack/chat.delete", data={"channel": "C1", "ts": "1.2"},
                               headers={"Prefer": "wait=0"})  # it deletes: a person decides
    assert held.status_code == 409 and held.json()["error"]["code"] == "approval_pending"
    assert len(upstream.reached()) == 1
    done = await gw.agent.post("/slack/apps.uninstall", data={"client_id": "c"})
    assert done.status_code == 200 and done.headers["x-gateway-decision"] == "allow"
    assert [(e["method"], e["path"]) for e in await gw.journal()] == [
        ("POST", "/apps.uninstall")]


async def test_custom_methods_in_one_segment_are_told_apart(
        aws: tuple[Harness, Recording]) -> None:
    """``/v1/{name}:pause`` and ``/v1/{placement}:predict`` are both ``/v1/*`` to a path
    template: each rule also checks the path, so the read's rule does not let the
    writes through as reads."""
    gw, upstream = aws
    assert (await gw.engage()).status_code == 200
    for method in ("pause", "purge"):
        frozen = await gw.agent.post(f"/aip/v1/m1:{method}", json={})
        assert frozen.status_code in (409, 423), (method, frozen.text)
    assert (await gw.agent.post("/aip/v1/m1:other", json={})).status_code == 403
    assert upstream.reached() == []
    read = await gw.agent.post("/aip/v1/p1:predict", json={"userEvent": {}})
    assert read.status_code == 200 and read.headers["x-gateway-decision"] == "allow"
    branch = await gw.agent.get("/aip/v1/c1:getDefaultBranch")
    assert branch.status_code == 200
    assert [a.target for a in upstream.reached()] == ["/v1/p1:predict",
                                                      "/v1/c1:getDefaultBranch"]
    assert await gw.journal() == []

    assert (await gw.release()).status_code == 200
    paused = await gw.agent.post("/aip/v1/m1:pause", json={})
    assert paused.status_code == 200 and paused.headers["x-gateway-decision"] == "allow"
    assert [(e["method"], e["path"]) for e in await gw.journal()] == [("POST", "/v1/m1:pause")]
