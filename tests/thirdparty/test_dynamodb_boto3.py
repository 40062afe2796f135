"""boto3's DynamoDB client through ``gateway serve``, under a policy generated from a
description shaped as ``dynamodb.json`` of the APIs.guru directory, on moto's server.

DynamoDB speaks AWS's JSON protocol: ``POST /`` with the operation in
``X-Amz-Target`` and a JSON body. botocore reads such a service's errors as JSON
(``__type``, ``message``): the gateway's refusals must come in that shape, or
boto3 shows the model an error with no code and no message ("Unknown"), and a
held call reads as a bare 409 instead of ``approval_pending`` and where to look.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.operator.policy_init import policy_from_description
from tests.harness import AGENT_KEY
from tests.proxy.test_generated_policies import DYNAMODB
from tests.thirdparty.conftest import ADMIN, Gateway

KEYS = ("credentials: {aws_sigv4: {access_key_id: gateway-held, secret_access_key: s3cret, "
        "region: us-east-1, service: dynamodb}}\n")


def dynamodb(endpoint: str, key: str) -> Any:
    import boto3  # here: the moto_server fixture skips (or fails in CI) when it is missing
    from botocore.config import Config

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=key, aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}))

    def now(request: Any, **_: Any) -> None:  # after signing: a held call answers at once
        request.headers["Prefer"] = "wait=0"
    client.meta.events.register("before-send.dynamodb", now)
    return client


def test_boto3_dynamodb_reads_the_gateways_refusals_in_its_own_json(
        moto_server: str, gateway_factory: Callable[..., Gateway]) -> None:
    from botocore.exceptions import ClientError

    text, _ = policy_from_description(DYNAMODB, "ddb", moto_server, "dynamodb.json")
    text = text.replace("\ndefault: deny", "\n" + KEYS + "default: deny")
    gateway = gateway_factory({"ddb.yaml": text})
    agent, direct = dynamodb(f"{gateway.proxy}/ddb", AGENT_KEY), dynamodb(moto_server, "testing")
    table = f"gateway-json-errors-{uuid.uuid4().hex[:8]}"  # one moto server for all
    direct.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])

    put = agent.put_item(TableName=table, Item={"id": {"S": "a1"}})  # a write: journaled
    assert put["ResponseMetadata"]["HTTPHeaders"]["x-gateway-decision"] == "allow"
    [entry] = gateway.journal()
    assert "putitem" in entry["rule"]

    with pytest.raises(ClientError) as held:  # it destroys: a person decides
        agent.delete_table(TableName=table)
    assert held.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    error = held.value.response["Error"]  # what the model reads: pending, and where
    assert error["Code"] == "OperationAborted", held.value.response
    assert "approval_pending" in error["Message"] and "/_gateway/approvals/" in error["Message"]
    assert direct.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE"

    with pytest.raises(ClientError) as denied:  # no rule names it: the default denies
        agent.list_tables()
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert "policy_denied" in denied.value.response["Error"]["Message"]

    engaged = httpx.post(f"{gateway.admin}/v1/killswitch/engage", json={"reason": "drill"},
                         headers=ADMIN)
    assert engaged.status_code == 200, engaged.text
    with pytest.raises(ClientError) as frozen:
        agent.put_item(TableName=table, Item={"id": {"S": "a2"}})
    assert frozen.value.response["ResponseMetadata"]["HTTPStatusCode"] == 423
    assert "writes_frozen" in frozen.value.response["Error"]["Message"]
    assert "Item" not in direct.get_item(TableName=table, Key={"id": {"S": "a2"}})
