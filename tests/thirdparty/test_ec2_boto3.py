"""boto3's EC2 client through ``gateway serve``, under a policy ``gateway policy init``
wrote, on moto's server.

botocore speaks AWS's query protocol as ``POST /`` with ``Action=RunInstances&...``
in a form body (never in the query). The generated rules judge ``Action`` there:
a write is journaled and frozen by the kill switch, a terminate waits for a
person (``approval: {answer: error}``: boto3 raises it, with the gateway's code
and message, which it reads from the query APIs' ``ErrorResponse``), a describe
reads. The gateway holds the AWS keys (``aws_sigv4`` credentials) and signs what
it sends; the agent signs with its gateway key as the access key id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.operator.policy_init import policy_from_description
from tests.harness import AGENT_KEY
from tests.thirdparty.conftest import ADMIN, Gateway


def _operation(name: str) -> dict[str, Any]:
    return {method: {"operationId": f"{method.upper()}_{name}",
                     "responses": {"200": {"description": "Success"}}}
            for method in ("get", "post")}


# the shape of ec2.json in the APIs.guru directory: every operation on ``/#Action=X``
EC2 = {"openapi": "3.0.0", "info": {"title": "Amazon Elastic Compute Cloud"},
       "paths": {f"/#Action={name}": _operation(name)
                 for name in ("DescribeInstances", "RunInstances", "TerminateInstances")}}
KEYS = ("credentials: {aws_sigv4: {access_key_id: gateway-held, secret_access_key: s3cret, "
        "region: us-east-1, service: ec2}}\n")


def ec2(endpoint: str, key: str) -> Any:
    import boto3  # here: the moto_server fixture skips (or fails in CI) when it is missing
    from botocore.config import Config

    client = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=key, aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}))

    def now(request: Any, **_: Any) -> None:  # after signing: a held call answers at once
        request.headers["Prefer"] = "wait=0"
    client.meta.events.register("before-send.ec2", now)
    return client


def test_boto3_ec2_calls_are_judged_by_the_action_in_their_body(
        moto_server: str, gateway_factory: Callable[..., Gateway]) -> None:
    from botocore.exceptions import ClientError

    text, _ = policy_from_description(EC2, "ec2", moto_server, "ec2.json")
    text = text.replace("\ndefault: deny", "\n" + KEYS + "default: deny")
    gateway = gateway_factory({"ec2.yaml": text})
    agent, direct = ec2(f"{gateway.proxy}/ec2", AGENT_KEY), ec2(moto_server, "testing")
    image = direct.describe_images()["Images"][0]["ImageId"]

    run = agent.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    assert run["ResponseMetadata"]["HTTPHeaders"]["x-gateway-decision"] == "allow"
    instance = run["Instances"][0]["InstanceId"]
    [entry] = gateway.journal()  # a write, journaled under RunInstances' rule
    assert (entry["method"], entry["path"]) == ("POST", "/") and "runinstances" in entry["rule"]

    listed = agent.describe_instances(InstanceIds=[instance])  # a read: not journaled
    assert listed["ResponseMetadata"]["HTTPHeaders"]["x-gateway-decision"] == "allow"
    assert listed["Reservations"][0]["Instances"][0]["InstanceId"] == instance
    assert len(gateway.journal()) == 1

    with pytest.raises(ClientError) as held:  # it destroys: a person decides
        agent.terminate_instances(InstanceIds=[instance])
    assert held.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    error = held.value.response["Error"]  # what the model reads: pending, and where
    assert error["Code"] == "OperationAborted", held.value.response
    assert "approval_pending" in error["Message"] and "/_gateway/approvals/" in error["Message"]
    state = direct.describe_instances(InstanceIds=[instance])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"

    before = direct.describe_instances()["Reservations"]
    engaged = httpx.post(f"{gateway.admin}/v1/killswitch/engage", json={"reason": "drill"},
                         headers=ADMIN)
    assert engaged.status_code == 200, engaged.text
    with pytest.raises(ClientError) as frozen:
        agent.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    assert frozen.value.response["ResponseMetadata"]["HTTPStatusCode"] == 423
    assert "writes_frozen" in frozen.value.response["Error"]["Message"]
    assert agent.describe_instances(InstanceIds=[instance])["Reservations"]  # reads go on
    assert direct.describe_instances()["Reservations"] == before  # nothing was run
